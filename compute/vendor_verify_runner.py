"""Vendor verification runner of the multi-timeframe aggregator (the I/O around :mod:`compute.vendor_verify`).

Enabled with ``python -m compute.bar_aggregator_1m_to_multi --verify-vendor kite``. A
background thread (its own Postgres connection and Kite client, so the bar hot path
never waits for it) runs a pass every ``--verify-every-s``:

1. per timeframe, the instruments whose durable bars (``bar_state``) moved past the
   point verified so far (``vendor_verify_state``), and per instrument the window of
   buckets that closed at least ``--verify-lag-s`` ago (:func:`compute.vendor_verify.pending_window`);
2. our ``bars_{tf}`` in the window and the vendor's candles of the same interval
   (``KiteConnect.historical_data``, rate limited, retried: :class:`ingestion.kite_history.KiteSource`);
3. the comparison (:func:`compute.vendor_verify.verify_bars`); mismatches are counted
   (``vendor_mismatches_total{tf,field}``) and logged, one line per bar up to a limit;
4. with ``--verify-correct`` only: mismatching bars take the vendor's OHLCV and each
   correction is recorded in ``bar_corrections`` (source ``vendor:kite``), in the same
   transaction as the new verified-to point. Missing bars on either side are counted,
   never inserted or deleted.

Each pass that checked something is a ``merge_runs`` row per timeframe (``dry_run``
unless correcting). Vendor or database failures never stop the service: they are
counted in ``vendor_errors_total{type}`` and logged in one line; the window is retried
on the next pass.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from kiteconnect import KiteConnect, exceptions as kite_ex
from psycopg.types.json import Jsonb

from compute.sessions import DAY_MS, SessionCalendar
from compute.vendor_verify import (
    KITE_INTERVALS,
    VerifyResult,
    mismatch_lines,
    narrow_to_ours,
    pending_window,
    verify_bars,
)
from core import db
from core.cli import env_int
from core.clock import IST
from core.errors import ConfigError, FatalError, TransientError
from core.metrics import Metrics
from core.settings import Settings
from ingestion.bar_merge import Candle, Tolerance
from ingestion.kite_history import KiteSource, history_limiter
from ingestion.merge_hist_daily import DEFAULT_TICK, apply_plan, load_bars, start_run

log = logging.getLogger("vendor_verify_runner")

DEFAULT_TOLERANCE = "price=0ticks,volume=0%"
#: Individual mismatch lines per pass; the rest are summed up in one line.
LOG_LIMIT = 20


class CandleSource(Protocol):
    """Vendor candles of one instrument: ``interval`` is a Kite interval, ``window`` inclusive ms."""

    requests: int

    def candles(self, token: int, window: tuple[int, int], interval: str = "minute") -> list[Candle]: ...


@dataclass(frozen=True, slots=True)
class VendorCheckConfig:
    """What the verification does (from the ``--verify-*`` flags)."""

    vendor: str
    tfs: tuple[str, ...]
    every_s: int = 300
    lag_s: int = 120
    tolerance: Tolerance = field(default_factory=Tolerance)
    correct: bool = False
    lookback_days: int = 5
    rate: int = 3

    @property
    def source(self) -> str:
        """The ``source`` written to ``bar_corrections`` / ``merge_runs``."""
        return f"vendor:{self.vendor}"


class VendorMetrics:
    """The verification's metrics, on the service's registry."""

    def __init__(self, metrics: Metrics) -> None:
        m = metrics
        self.passes = m.counter("vendor_passes_total", "Vendor verification passes completed")
        self.checked = m.counter("vendor_bars_checked_total", "Bars compared with a vendor candle", ["tf"])
        self.mismatched = m.counter("vendor_mismatched_bars_total", "Bars beyond tolerance of the vendor", ["tf"])
        self.mismatches = m.counter("vendor_mismatches_total", "Fields beyond tolerance of the vendor",
                                    ["tf", "field"])
        self.corrections = m.counter("vendor_corrections_total", "Bars replaced by the vendor's values", ["tf"])
        self.missing = m.counter("vendor_missing_total",
                                 "Buckets only one side has (side=vendor: our bar, no candle; side=ours: "
                                 "a candle, no bar of ours)", ["tf", "side"])
        self.invalid = m.counter("vendor_invalid_candles_total", "Vendor candles malformed or misaligned", ["tf"])
        self.errors = m.counter("vendor_errors_total", "Vendor verification failures (service keeps running)",
                                ["type"])
        self.requests = m.counter("vendor_requests_total", "Vendor historical requests")
        self.last_pass = m.gauge("vendor_last_pass_timestamp_seconds", "End of the last completed pass (unix s)")

    def record(self, res: VerifyResult, corrected: bool) -> None:
        """Count one instrument/timeframe comparison."""
        tf = res.tf
        self.checked.labels(tf).inc(res.checked)
        if res.mismatches:
            self.mismatched.labels(tf).inc(len(res.mismatches))
            for f, n in res.field_counts().items():
                self.mismatches.labels(tf, f).inc(n)
            if corrected:
                self.corrections.labels(tf).inc(len(res.mismatches))
        if res.missing_vendor:
            self.missing.labels(tf, "vendor").inc(len(res.missing_vendor))
        if res.missing_ours:
            self.missing.labels(tf, "ours").inc(len(res.missing_ours))
        if res.invalid:
            self.invalid.labels(tf).inc(len(res.invalid))


@dataclass(slots=True)
class _Run:
    """One ``merge_runs`` row: a pass over one timeframe."""

    run_id: uuid.UUID
    results: list[VerifyResult] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class PassReport:
    """What one pass did (also logged as one summary line)."""

    results: list[VerifyResult] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    aborted: str = ""

    def total(self, attr: str) -> int:
        """Sum over results of ``checked`` or of the length of a list attribute."""
        return sum(getattr(r, attr) if attr == "checked" else len(getattr(r, attr)) for r in self.results)


_PENDING_SQL = (
    "SELECT s.instrument_token, s.last_ts, v.verified_to FROM bar_state s "
    "LEFT JOIN vendor_verify_state v ON v.source = %s AND v.tf = s.tf AND v.instrument_token = s.instrument_token "
    "WHERE s.tf = %s AND s.last_ts >= %s AND (v.verified_to IS NULL OR s.last_ts >= v.verified_to) "
    "ORDER BY s.instrument_token")

_STATE_SQL = (
    "INSERT INTO vendor_verify_state (source, tf, instrument_token, verified_to, last_run_id) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source, tf, instrument_token) DO UPDATE SET "
    "verified_to = greatest(vendor_verify_state.verified_to, EXCLUDED.verified_to), "
    "last_run_id = EXCLUDED.last_run_id, updated_at = now()")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class VendorCheck:
    """Runs verification passes against Postgres and a vendor (one pass at a time, one thread)."""

    def __init__(self, dsn: str, source: CandleSource, config: VendorCheckConfig, metrics: VendorMetrics,
                 calendar: SessionCalendar | None = None, clock: Callable[[], float] = time.time,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.dsn = dsn
        self.source = source
        self.config = config
        self.metrics = metrics
        self.calendar = calendar or SessionCalendar()
        self.clock = clock
        self.stopping = stopping
        self._conn: psycopg.Connection[Any] | None = None

    # -- database ---------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.dsn, timeout=10, autocommit=True)
        return self._conn

    def close(self) -> None:
        """Close the database connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _pending(self, conn: psycopg.Connection[Any], now_ms: int) -> list[tuple[str, int, tuple[int, int]]]:
        cutoff = now_ms - self.config.lag_s * 1000
        since = now_ms - self.config.lookback_days * DAY_MS
        units = []
        for tf in self.config.tfs:
            rows = conn.execute(_PENDING_SQL, (self.config.source, tf, _dt(since))).fetchall()
            for token, last_ts, verified_to in rows:
                session = self.calendar.session_for(int(token))
                window = pending_window(session, tf, cutoff, _ms(last_ts),
                                        None if verified_to is None else _ms(verified_to), since)
                if window is not None:
                    units.append((tf, int(token), window))
        return units

    @staticmethod
    def _tick_sizes(conn: psycopg.Connection[Any], tokens: Sequence[int]) -> dict[int, float]:
        rows = conn.execute("SELECT instrument_token, tick_size FROM instruments WHERE instrument_token = ANY(%s)",
                            (list(tokens),)).fetchall()
        return {int(t): float(s) for t, s in rows if s and s > 0}

    # -- one pass ---------------------------------------------------------------
    def run_pass(self) -> PassReport:
        """Verify every pending window once; never raises for vendor or database failures."""
        report = PassReport()
        runs: dict[str, _Run] = {}
        requests0 = self.source.requests
        try:
            conn = self._connection()
            units = self._pending(conn, int(self.clock() * 1000))
            ticks = self._tick_sizes(conn, sorted({u[1] for u in units})) if units else {}
            for tf, token, window in units:
                if self.stopping():
                    report.aborted = "stop requested"
                    break
                if not self._verify_unit(conn, tf, token, window, ticks.get(token, DEFAULT_TICK), runs, report):
                    break
            self._finish_runs(conn, runs, report)
        except (psycopg.Error, TransientError) as exc:  # vendor TransientErrors are handled per window
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._error(report, "db", f"database: {first}")
            self.close()
            report.aborted = report.aborted or "database error"
        report.requests = self.source.requests - requests0
        self.metrics.requests.inc(report.requests)
        if not report.aborted:
            self.metrics.passes.inc()
            self.metrics.last_pass.set(self.clock())
        self._log(report)
        return report

    def _verify_unit(self, conn: psycopg.Connection[Any], tf: str, token: int, window: tuple[int, int],
                     tick: float, runs: dict[str, _Run], report: PassReport) -> bool:
        """Check one instrument/timeframe window; False aborts the pass (vendor down or rejecting us)."""
        session = self.calendar.session_for(token)
        ours = load_bars(conn, token, window, tf)
        narrowed = narrow_to_ours(session, window, ours)
        if narrowed is None:  # nothing of ours in the session to check: no request, the window is done
            with conn.transaction():
                conn.execute(_STATE_SQL, (self.config.source, tf, token, _dt(window[1]), None))
            return True
        try:
            vendor = self.source.candles(token, (narrowed[0], narrowed[1] - 1000), KITE_INTERVALS[tf])
        except FatalError as exc:
            self._error(report, "token", str(exc))
            report.aborted = "vendor rejected the credentials"
            return False
        except kite_ex.PermissionException as exc:  # e.g. no historical-data subscription
            self._error(report, "permission", str(exc)[:160])
            report.aborted = "vendor refused historical data"
            return False
        except TransientError as exc:  # already retried with backoff: the vendor is down, try next pass
            self._unit_failed(runs, tf, token, report, "unavailable", exc)
            report.aborted = "vendor unavailable"
            return False
        except kite_ex.KiteException as exc:  # this instrument only (e.g. unknown to the vendor): next pass
            self._unit_failed(runs, tf, token, report, "api", exc)
            return True
        res = verify_bars(vendor, ours, tf, session, tick, self.config.tolerance, narrowed, token)
        run = runs.get(tf)
        if run is None:
            run = runs[tf] = _Run(uuid.uuid4())
            start_run(conn, run.run_id, datetime.fromtimestamp(narrowed[0] / 1000, IST).date(), self.config.source,
                      self.config.tolerance, tf=tf, dry_run=not self.config.correct)
        with conn.transaction():  # the corrections and the new verified point, together
            if self.config.correct and res.mismatches:
                apply_plan(conn, token, res.corrections(), run.run_id, self.config.source, tf)
            conn.execute(_STATE_SQL, (self.config.source, tf, token, _dt(window[1]), run.run_id))
        run.results.append(res)
        report.results.append(res)
        self.metrics.record(res, self.config.correct)
        return True

    def _unit_failed(self, runs: dict[str, _Run], tf: str, token: int, report: PassReport, kind: str,
                     exc: Exception) -> None:
        text = f"{type(exc).__name__}: {str(exc)[:160]}"
        self._error(report, kind, f"tf={tf} instrument_token={token} {text}")
        if tf in runs:
            runs[tf].failed[token] = text

    def _error(self, report: PassReport, kind: str, text: str) -> None:
        report.errors[kind] = report.errors.get(kind, 0) + 1
        self.metrics.errors.labels(kind).inc()
        log.warning("vendor verification error type=%s %s", kind, text)

    def _finish_runs(self, conn: psycopg.Connection[Any], runs: dict[str, _Run], report: PassReport) -> None:
        for run in runs.values():
            per: dict[str, Any] = {str(t): {"error": e} for t, e in run.failed.items()}
            for r in run.results:
                per[str(r.token)] = {"checked": r.checked, "mismatches": len(r.mismatches),
                                     "missing_vendor": len(r.missing_vendor), "missing_ours": len(r.missing_ours),
                                     "invalid": len(r.invalid)}
            status = "partial" if run.failed or report.aborted else "ok"
            with conn.transaction():
                conn.execute(
                    "UPDATE merge_runs SET status = %s, instruments = %s, reference = %s, updated = %s, "
                    "unchanged = %s, extra = %s, invalid = %s, failed = %s, per_instrument = %s, "
                    "finished_at = now() WHERE run_id = %s",
                    (status, len(per), sum(r.reference for r in run.results),
                     sum(len(r.mismatches) for r in run.results), sum(r.matched for r in run.results),
                     sum(len(r.missing_vendor) for r in run.results), sum(len(r.invalid) for r in run.results),
                     len(run.failed), Jsonb(per), run.run_id))

    def _log(self, report: PassReport) -> None:
        for line in mismatch_lines(report.results, LOG_LIMIT, self.config.correct):
            log.warning("%s", line)
        if report.results or report.errors:
            mism = report.total("mismatches")
            log.info("vendor verification pass windows=%d checked=%d mismatched=%d corrected=%d missing_vendor=%d "
                     "missing_ours=%d invalid=%d requests=%d errors=%d%s", len(report.results),
                     report.total("checked"), mism, mism if self.config.correct else 0,
                     report.total("missing_vendor"), report.total("missing_ours"), report.total("invalid"),
                     report.requests, sum(report.errors.values()),
                     f" aborted=\"{report.aborted}\"" if report.aborted else "")


class VendorCheckThread:
    """Runs :class:`VendorCheck` passes every ``every_s`` in a daemon thread until stopped."""

    def __init__(self, check: VendorCheck, every_s: float, first_delay_s: float, stop: threading.Event) -> None:
        self.check = check
        self.every_s = every_s
        self.first_delay_s = first_delay_s
        self._stop = stop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vendor-check", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        delay = self.first_delay_s
        while not self._stop.wait(delay):
            t0 = time.monotonic()
            try:
                self.check.run_pass()
            except Exception as exc:  # noqa: BLE001 - a bug here must not take the bar service down
                self.check.metrics.errors.labels("internal").inc()
                log.error("vendor verification pass failed: %s: %s", type(exc).__name__, str(exc)[:200])
                self.check.close()
            delay = max(0.0, self.every_s - (time.monotonic() - t0))
        self.check.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it (it finishes at most the current request)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("vendor verification still busy after %.0fs; leaving it (daemon thread)", timeout)


# -- wiring ----------------------------------------------------------------------------------

def kite_source(settings: Settings, rate: int, stop: threading.Event) -> KiteSource:
    """A rate-limited Kite historical source whose retry sleeps end early on stop."""
    kite = KiteConnect(settings.kite_api_key.get_secret_value(), settings.kite_access_token.get_secret_value(),
                       root=settings.kite_root, timeout=10)

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    return KiteSource(kite, history_limiter(rate), sleep=sleep)


def start_vendor_check(config: VendorCheckConfig, settings: Settings, metrics: Metrics,
                       calendar: SessionCalendar) -> VendorCheckThread:
    """Build the runner for ``config`` and start its thread."""
    stop = threading.Event()
    check = VendorCheck(settings.dsn, kite_source(settings, config.rate, stop), config, VendorMetrics(metrics),
                        calendar, stopping=stop.is_set)
    thread = VendorCheckThread(check, config.every_s, min(float(config.every_s), 5.0), stop)
    thread.start()
    log.info("vendor verification on vendor=%s tfs=%s every_s=%d lag_s=%d tolerance=%s correct=%s",
             config.vendor, ",".join(config.tfs), config.every_s, config.lag_s, config.tolerance.as_dict(),
             config.correct)
    return thread


def add_vendor_flags(ap: argparse.ArgumentParser) -> None:
    """The ``--verify-*`` options (each with an environment fallback)."""
    g = ap.add_argument_group("vendor verification (off by default)")
    g.add_argument("--verify-vendor", choices=("off", "kite"), default=os.environ.get("VERIFY_VENDOR") or "off",
                   help="compare our bars with the vendor's historical candles (env VERIFY_VENDOR, default off); "
                        "kite uses KITE_ROOT, KITE_API_KEY, KITE_ACCESS_TOKEN (kitesim or Kite)")
    g.add_argument("--verify-every-s", type=int, default=env_int("VERIFY_EVERY_S", 300),
                   help="seconds between verification passes (env VERIFY_EVERY_S, default 300)")
    g.add_argument("--verify-lag-s", type=int, default=env_int("VERIFY_LAG_S", 120),
                   help="only buckets that closed at least this long ago (env VERIFY_LAG_S, default 120)")
    g.add_argument("--verify-tolerance", default=os.environ.get("VERIFY_TOLERANCE") or DEFAULT_TOLERANCE,
                   help="allowed difference: price=<N>ticks|<rupees>, volume=<N>|<N>%% "
                        f"(env VERIFY_TOLERANCE, default {DEFAULT_TOLERANCE.replace('%', '%%')})")
    g.add_argument("--verify-correct", action="store_true",
                   default=os.environ.get("VERIFY_CORRECT", "").lower() in ("1", "true", "yes"),
                   help="replace bars beyond tolerance with the vendor's values and record each correction in "
                        "bar_corrections (env VERIFY_CORRECT=1; default: count and log only)")
    g.add_argument("--verify-lookback-days", type=int, default=env_int("VERIFY_LOOKBACK_DAYS", 5),
                   help="on a first run or after an outage, verify bars at most this many days old "
                        "(env VERIFY_LOOKBACK_DAYS, default 5)")
    g.add_argument("--verify-rate", type=int, default=env_int("VERIFY_RATE", 3),
                   help="max vendor historical requests per second (env VERIFY_RATE, default 3: Kite's limit)")


def vendor_config(ap: argparse.ArgumentParser, args: argparse.Namespace,
                  tfs: Sequence[str]) -> VendorCheckConfig | None:
    """The verification config from parsed flags (None when off); bad values exit 2 with one line."""
    if args.verify_vendor == "off":
        if args.verify_correct:
            ap.error("--verify-correct needs --verify-vendor kite")
        return None
    if args.verify_every_s < 1:
        ap.error("--verify-every-s must be >= 1")
    if args.verify_lag_s < 0:
        ap.error("--verify-lag-s must be >= 0")
    if not 1 <= args.verify_lookback_days <= 60:
        ap.error("--verify-lookback-days must be between 1 and 60")
    if not 1 <= args.verify_rate <= 10:
        ap.error("--verify-rate must be between 1 and 10")
    try:
        tol = Tolerance.parse(args.verify_tolerance, flag="--verify-tolerance")
    except ConfigError as exc:
        ap.error(str(exc))
    return VendorCheckConfig(args.verify_vendor, tuple(tfs), args.verify_every_s, args.verify_lag_s, tol,
                             args.verify_correct, args.verify_lookback_days, args.verify_rate)

