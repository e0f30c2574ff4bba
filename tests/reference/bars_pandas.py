"""Independent pandas reference for bar semantics (the definition is in ``compute/bars.py``'s docstring).

Written from the written definition only, with whole-table pandas operations
and none of the production code paths (no import from ``compute``): dedupe
with ``drop_duplicates``, order with a sort, volume from ``diff().clip(0)``,
buckets from the IANA ``Asia/Kolkata`` zone via pandas timezones. Every
timeframe is computed from ticks directly (not rolled up), so rollup bugs show.

It assumes no tick is late (the builders drop late ticks; the generated
streams keep disorder inside the grace so none are).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

ALL_TFS = ("1s", "1m", "3m", "5m", "15m", "30m", "60m")
TF_SECONDS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600}
# A duplicate repeats all of these (instrument implied); recv_ts and extras do not matter.
DUP_COLUMNS = ["instrument_token", "exchange_ts", "ltp", "volume", "last_qty", "oi",
               "bid", "ask", "bid_qty", "ask_qty"]
BAR_COLUMNS = ["instrument_token", "tf", "ts", "open", "high", "low", "close", "volume", "ticks", "cum_volume"]


def _hhmm_ms(text: str) -> int:
    hours, minutes = text.split(":")
    return int(pd.Timedelta(hours=int(hours), minutes=int(minutes)) / pd.Timedelta(milliseconds=1))


def prepare_ticks(ticks: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Deduplicated ticks in event order with per-tick volume contribution and running baseline."""
    df = pd.DataFrame(list(ticks))
    for col in DUP_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[DUP_COLUMNS].copy()
    # Compare on object dtype so None == None and ints stay exact.
    keyed = df.astype(object).where(df.notna(), None)
    df = df.loc[~keyed.duplicated(keep="first")].copy()
    df["ltp"] = df["ltp"].astype(float)
    df["vol_order"] = df["volume"].fillna(-1).astype("int64")
    df = df.sort_values(["instrument_token", "exchange_ts", "vol_order", "ltp"], kind="mergesort")
    df = df.reset_index(drop=True)

    has_vol = df["volume"].notna()
    vols = df.loc[has_vol, ["instrument_token", "volume"]].astype("int64")
    steps = vols.groupby("instrument_token")["volume"].diff()
    df["contrib"] = 0
    df.loc[has_vol, "contrib"] = steps.clip(lower=0).fillna(0).astype("int64")
    df["contrib"] = df["contrib"].astype("int64")
    df["baseline"] = df["volume"].astype("Float64").groupby(df["instrument_token"]).ffill()
    return df


def _anchored_start(ts_ms: pd.Series, tf_s: int, open_ms: int, close_ms: int, tz: str) -> pd.Series:
    """Session-anchored bucket start: from the open inside, backwards from it before, from the close after."""
    local = pd.to_datetime(ts_ms, unit="ms", utc=True).dt.tz_convert(tz)
    midnight = local.dt.normalize()
    t = ((local - midnight) / pd.Timedelta(milliseconds=1)).astype("int64").to_numpy()
    size = tf_s * 1000
    after = close_ms + np.floor_divide(t - close_ms, size) * size
    during = open_ms + np.floor_divide(t - open_ms, size) * size
    before = np.maximum(during, 0)
    start = np.where(t >= close_ms, after, np.where(t >= open_ms, during, before))
    midnight_ms = ((midnight - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)).astype("int64")
    return pd.Series(midnight_ms.to_numpy() + start, index=ts_ms.index)


def bars_from_prepared(df: pd.DataFrame, tf: str, open_hhmm: str = "09:15", close_hhmm: str = "15:30",
                       tz: str = "Asia/Kolkata") -> pd.DataFrame:
    """Bars of one timeframe from :func:`prepare_ticks` output."""
    if df.empty:
        return pd.DataFrame(columns=BAR_COLUMNS)
    tf_s = TF_SECONDS[tf]
    if tf in ("1s", "1m"):
        bucket = df["exchange_ts"] // (tf_s * 1000) * (tf_s * 1000)
    else:
        bucket = _anchored_start(df["exchange_ts"], tf_s, _hhmm_ms(open_hhmm), _hhmm_ms(close_hhmm), tz)
    grouped = df.assign(ts=bucket).groupby(["instrument_token", "ts"], sort=True)
    out = grouped.agg(open=("ltp", "first"), high=("ltp", "max"), low=("ltp", "min"), close=("ltp", "last"),
                      volume=("contrib", "sum"), ticks=("ltp", "size"), cum_volume=("baseline", "last"))
    out = out.reset_index()
    out["tf"] = tf
    out["volume"] = out["volume"].astype("int64")
    out["ticks"] = out["ticks"].astype("int64")
    out["cum_volume"] = pd.Series([None if pd.isna(v) else int(v) for v in out["cum_volume"]],
                                  index=out.index, dtype=object)
    return out[BAR_COLUMNS].reset_index(drop=True)


def reference_bars(ticks: Iterable[Mapping[str, Any]], tfs: Sequence[str] = ALL_TFS,
                   open_hhmm: str = "09:15", close_hhmm: str = "15:30",
                   tz: str = "Asia/Kolkata") -> dict[str, pd.DataFrame]:
    """``{tf: DataFrame}`` of bars (columns :data:`BAR_COLUMNS`, sorted by token, ts) for a tick list."""
    df = prepare_ticks(ticks)
    return {tf: bars_from_prepared(df, tf, open_hhmm, close_hhmm, tz) for tf in tfs}


def frame_rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows as plain Python tuples in :data:`BAR_COLUMNS` order (for exact comparison)."""
    rows = []
    for rec in frame[BAR_COLUMNS].itertuples(index=False):
        rows.append((int(rec[0]), str(rec[1]), int(rec[2]), float(rec[3]), float(rec[4]), float(rec[5]),
                     float(rec[6]), int(rec[7]), int(rec[8]), None if pd.isna(rec[9]) else int(rec[9])))
    return rows
