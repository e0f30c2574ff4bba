"""History for the backtester: bars from a CSV file, the parquet archive or Postgres, as columns.

Every source gives a :class:`BarSet`: one timeframe, the instruments (from
``configs/tokens.csv``, or made up for a CSV symbol the universe does not know)
and the bars of all of them merged in time order as numpy columns (``ts`` in
epoch ms UTC, the bar's start, as in the live ``bars_<tf>`` tables).

- CSV (``--csv FILE --symbol NAME``): the first column is the bar's date/time,
  then ``open, high, low, close, volume`` in any letter case (volume optional).
  Naive times are taken in ``--tz`` (default Asia/Kolkata); times with an offset
  keep it. Read by pyarrow's CSV reader (a million rows in well under a second).
- Parquet (``--parquet DIR``): the archive ``compute.sinks.s3_archiver`` writes,
  ``DIR/bars/tf=<tf>/date=<YYYY-MM-DD>/part-0.parquet``.
- Postgres (``--from-db``): the ``bars_<tf>`` tables.

Bad input is one :class:`~core.errors.ConfigError` line naming the file, the
row or column and the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from core.errors import ConfigError
from core.universe import Instrument, expected_segment_code, make_token

TF_SECONDS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600, "1d": 86400}
"""The timeframes the backtester reads (``1d``: daily bars, CSV only)."""
DB_TFS = ("1s", "1m", "3m", "5m", "15m", "30m", "60m")
CSV_SYMBOL_BASE = 900_000
"""Exchange tokens given to CSV symbols the universe does not list (NSE equity, tick 0.01)."""


@dataclass(slots=True)
class BarSet:
    """Bars of one timeframe, all instruments merged by (ts, instrument order)."""

    tf: str
    instruments: dict[int, Instrument]
    token: np.ndarray   # int64
    ts: np.ndarray      # int64 epoch ms, the bar's start
    open: np.ndarray    # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ts)

    def symbols(self) -> list[str]:
        return [self.instruments[t].tradingsymbol for t in self.instruments]


def infer_tf(ts_ms: np.ndarray, where: str) -> str:
    """The timeframe whose length is the most common gap between consecutive bars."""
    if len(ts_ms) < 2:
        raise ConfigError(f"{where}: needs at least two bars to tell the timeframe (or give --tf)")
    gaps = np.diff(np.unique(ts_ms)) // 1000
    values, counts = np.unique(gaps, return_counts=True)
    gap = int(values[np.argmax(counts)])
    for tf, sec in TF_SECONDS.items():
        if gap == sec:
            return tf
    if gap in (2 * 86400, 3 * 86400):  # daily data thinned by weekends
        return "1d"
    raise ConfigError(f"{where}: bars are {gap} s apart, not a timeframe the backtester knows "
                      f"({', '.join(TF_SECONDS)}); give --tf")


def csv_instrument(symbol: str, universe: Sequence[Instrument], price: float = 100.0) -> Instrument:
    """The universe's instrument for ``symbol`` (``NSE:INFY`` or ``INFY``), else a made-up NSE equity."""
    key = symbol.strip().upper()
    for inst in universe:
        if key in (inst.key, inst.tradingsymbol) and inst.tradable:
            return inst
    name = key.split(":")[-1]
    exch_token = CSV_SYMBOL_BASE + int.from_bytes(name.encode()[:6].ljust(6, b"\0"), "big") % 90_000
    code = expected_segment_code("NSE", "NSE")
    return Instrument(exchange_token=exch_token, tradingsymbol=name, exchange="NSE", segment="NSE",
                      instrument_type="EQ", instrument_token=make_token(exch_token, code), tick_size=0.01,
                      lot_size=1, last_price=max(0.01, round(price, 2)))


def _tz(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz: unknown time zone {name!r}") from None


def read_csv(path: Path, symbol: str, universe: Sequence[Instrument], tz: str = "Asia/Kolkata",
             tf: str | None = None) -> BarSet:
    """One symbol's bars from a CSV file (see the module docstring)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    from pyarrow import csv as pacsv  # noqa: PLC0415

    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    zone = _tz(tz)
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(timestamp_parsers=[
            pacsv.ISO8601, "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%d-%m-%Y %H:%M", "%d-%m-%Y"]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    if table.num_rows == 0:
        raise ConfigError(f"{path}: no rows")
    names = {n.strip().lower(): n for n in table.column_names[1:]}
    missing = [c for c in ("open", "high", "low", "close") if c not in names]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(table.column_names)})")
    first = table.column(0)
    if not pa.types.is_timestamp(first.type):
        if pa.types.is_date(first.type):
            first = first.cast(pa.timestamp("s"))
        else:
            bad = next((v for v in first.to_pylist() if v is not None), None)
            raise ConfigError(f"{path}: column {table.column_names[0]!r}: not a date/time (e.g. {bad!r})")
    if first.null_count:
        raise ConfigError(f"{path}: column {table.column_names[0]!r}: {first.null_count} empty date/time value(s)")
    if first.type.tz is None:
        first = pc.assume_timezone(first, timezone=zone.key, ambiguous="earliest", nonexistent="earliest")
    ts = first.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
    cols = _price_columns(table, names, path, len(ts))
    inconsistent = np.flatnonzero((cols["high"] < np.maximum(cols["open"], cols["close"]) - 1e-9)
                                  | (cols["low"] > np.minimum(cols["open"], cols["close"]) + 1e-9))
    if len(inconsistent):
        i = int(inconsistent[0])
        raise ConfigError(f"{path}: row {i + 2}: high/low do not contain open/close "
                          f"(o {cols['open'][i]}, h {cols['high'][i]}, l {cols['low'][i]}, c {cols['close'][i]})")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    dup = np.flatnonzero(np.diff(ts) == 0)
    if len(dup):
        raise ConfigError(f"{path}: two rows for {datetime.fromtimestamp(ts[dup[0]] / 1000, zone).isoformat()}")
    inst = csv_instrument(symbol, universe, float(cols["close"][order[-1]]))
    found = infer_tf(ts, str(path)) if tf is None or len(ts) > 1 else tf
    if tf is not None and tf != found:
        raise ConfigError(f"{path}: --tf {tf}, but the bars are {found} bars")
    tf = found
    n = len(ts)
    return BarSet(tf, {inst.instrument_token: inst}, np.full(n, inst.instrument_token, dtype=np.int64), ts,
                  cols["open"][order], cols["high"][order], cols["low"][order], cols["close"][order],
                  cols["volume"][order])


def _price_columns(table: Any, names: dict[str, str], path: Path, n: int) -> dict[str, np.ndarray]:
    """open/high/low/close (positive, finite) and volume (>= 0; zeros when absent) as numpy columns."""
    import pyarrow as pa  # noqa: PLC0415

    cols: dict[str, np.ndarray] = {}
    for c in ("open", "high", "low", "close", "volume"):
        if c not in names:
            cols[c] = np.zeros(n, dtype=np.int64)
            continue
        try:
            arr = table.column(names[c]).cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ConfigError(f"{path}: column {names[c]!r}: not numeric") from None
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | ((arr <= 0) if c != "volume" else False))
        if len(bad):
            i = int(bad[0])
            raise ConfigError(f"{path}: row {i + 2}: {names[c]} = {float(arr[i])!r} is not a positive number")
        cols[c] = arr if c != "volume" else arr.astype(np.int64)
    return cols


def select_instruments(symbols: Sequence[str], universe: Sequence[Instrument]) -> dict[int, Instrument]:
    """``--symbols`` against the universe (``INFY`` or ``NSE:INFY``); an unknown one is a ConfigError."""
    out: dict[int, Instrument] = {}
    for s in symbols:
        key = s.strip().upper()
        found = [i for i in universe if key in (i.key, i.tradingsymbol) and i.tradable]
        nse = [i for i in found if i.exchange == "NSE"]
        if len(found) > 1 and nse and ":" not in key:
            found = nse
        if not found:
            raise ConfigError(f"--symbols: {s!r} is not a tradable instrument of tokens.csv")
        out[found[0].instrument_token] = found[0]
    return out


def ist_range_ms(start: date, end: date) -> tuple[int, int]:
    """[start 00:00 IST, end + 1 day 00:00 IST) in epoch ms."""
    ist = ZoneInfo("Asia/Kolkata")
    lo = datetime.combine(start, datetime.min.time(), ist)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), ist)
    return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)


def _merge(tf: str, instruments: dict[int, Instrument], rows: Iterable[Sequence[np.ndarray]], where: str) -> BarSet:
    parts = [r for r in rows if len(r[0])]
    if not parts:
        names = ", ".join(i.tradingsymbol for i in instruments.values())
        raise ConfigError(f"{where}: no {tf} bars for {names} in the range")
    cols = [np.concatenate([p[k] for p in parts]) for k in range(7)]
    rank = {t: n for n, t in enumerate(instruments)}
    order = np.lexsort((np.vectorize(rank.__getitem__, otypes=[np.int64])(cols[0]), cols[1]))
    token, ts, o, h, lo, c, v = (col[order] for col in cols)
    bad = np.flatnonzero(~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)) | (c <= 0))
    if len(bad):
        raise ConfigError(f"{where}: bar of {int(token[bad[0]])} at {int(ts[bad[0]])} has a non-positive price")
    return BarSet(tf, instruments, token.astype(np.int64), ts.astype(np.int64), o.astype(np.float64),
                  h.astype(np.float64), lo.astype(np.float64), c.astype(np.float64), v.astype(np.int64))


def read_db(dsn: str, tf: str, instruments: dict[int, Instrument], start: date, end: date) -> BarSet:
    """Bars of ``instruments`` from ``bars_<tf>`` between two IST dates (inclusive)."""
    from core.db import connect  # noqa: PLC0415

    if tf not in DB_TFS:
        raise ConfigError(f"--tf: {tf!r} is not stored in Postgres (one of {', '.join(DB_TFS)})")
    lo, hi = ist_range_ms(start, end)
    with connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT instrument_token, (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume "  # noqa: S608
            f"FROM bars_{tf} WHERE instrument_token = ANY(%s) AND ts >= to_timestamp(%s / 1000.0) "
            f"AND ts < to_timestamp(%s / 1000.0) ORDER BY ts, instrument_token",
            (list(instruments), lo, hi)).fetchall()
    if not rows:
        return _merge(tf, instruments, [], f"bars_{tf}")
    arr = list(zip(*rows, strict=True))
    return _merge(tf, instruments, [[np.asarray(a) for a in arr]], f"bars_{tf}")


def read_parquet(root: Path, tf: str, instruments: dict[int, Instrument], start: date, end: date) -> BarSet:
    """Bars of ``instruments`` from the archive under ``root`` between two IST dates (inclusive)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    base = root / "bars" / f"tf={tf}"
    if not base.is_dir():
        raise ConfigError(f"{base}: no archive of {tf} bars here")
    tokens = np.fromiter(instruments, dtype=np.int64)
    parts: list[list[np.ndarray]] = []
    day = start
    while day <= end:
        path = base / f"date={day.isoformat()}" / "part-0.parquet"
        day += timedelta(days=1)
        if not path.is_file():
            continue
        t = pq.read_table(path, columns=["instrument_token", "ts", "open", "high", "low", "close", "volume"])
        tok = t.column("instrument_token").to_numpy()
        keep = np.isin(tok, tokens)
        ts = t.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
        parts.append([tok[keep], ts[keep], *(t.column(c).to_numpy()[keep]
                                              for c in ("open", "high", "low", "close", "volume"))])
    return _merge(tf, instruments, parts, str(base))
