"""The baseline a user would otherwise write: a quixstreams 1 s tumbling-window OHLCV app.

Patch (bench harness only, not the product): Tansu does not report the
``retention.ms`` topic config that quixstreams reads when it derives its
changelog topics, so ``TopicManager.derive_topic_config`` gets a default of
``-1`` (infinite) when the key is missing.

Volume here is the sum of ``last_qty`` inside the window (the natural
quixstreams formulation); tradestack derives it from cumulative-volume deltas,
which needs per-instrument state across windows. The work per tick is comparable.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
import time
import uuid

_PATCHED = False

MISSING = ("quixstreams is not installed: it is bench-only, in the [bench] extra "
           "(`make bench` installs it; or pip install -c constraints.txt -e '.[bench]')")


def require_quixstreams() -> None:
    """Stop with one clear line (exit 2) when the bench-only quixstreams package is missing."""
    if importlib.util.find_spec("quixstreams") is None:
        print(f"bench: {MISSING}", file=sys.stderr)
        raise SystemExit(2)


def _patch_retention() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from quixstreams.models.topics import manager

    original = manager.TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive(cls, topics):  # type: ignore[no-untyped-def]
        for t in topics:
            extra = t.broker_config.extra_config
            extra.setdefault("retention.ms", "-1")
            extra.setdefault("retention.bytes", "-1")
        return original(cls, topics)

    manager.TopicManager.derive_topic_config = classmethod(derive)  # type: ignore[method-assign]
    _PATCHED = True


def quix_ohlcv_rate(bootstrap: str, topic: str, n: int) -> float:
    """Ticks/s of a quixstreams tumbling-window OHLCV app over ``n`` messages of ``topic``."""
    require_quixstreams()
    _patch_retention()
    from quixstreams import Application
    from quixstreams.dataframe.windows import First, Last, Max, Min, Sum

    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    processed = 0
    holder: dict[str, object] = {}

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        nonlocal processed
        processed += 1
        if processed == 1:
            holder["t0"] = time.perf_counter()  # exclude the group join
        if processed >= n:
            holder["t1"] = time.perf_counter()
            holder["app"].stop()  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(broker_address=bootstrap, consumer_group=f"quix-{uuid.uuid4().hex[:8]}",
                          auto_offset_reset="earliest", state_dir=state_dir, loglevel="WARNING",
                          on_message_processed=on_processed,
                          consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
        src = app.topic(topic, value_deserializer="json",
                        timestamp_extractor=lambda v, _h, _ts, _t: v["exchange_ts"])
        out = app.topic(f"{topic}.quixbars", value_serializer="json")
        sdf = app.dataframe(src)
        sdf = sdf.tumbling_window(duration_ms=1000, grace_ms=2000).agg(
            open=First("ltp"), high=Max("ltp"), low=Min("ltp"), close=Last("ltp"), volume=Sum("last_qty"),
        ).final()
        sdf.to_topic(out)
        holder["app"] = app
        app.run()
        return (n - 1) / (holder["t1"] - holder["t0"])  # type: ignore[operator]
