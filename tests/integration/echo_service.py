"""A minimal consume-transform-produce-upsert service used to test core.stream.

Input topic ``$ECHO_IN`` carries JSON ``{"id": str, "n": int}``; each record is
re-emitted to ``$ECHO_OUT`` with ``n*2`` and upserted into table ``echo_rows``.
``ECHO_SLOW_MS`` sleeps inside the sink so a SIGKILL lands mid-batch.
Test-only wiring: it exercises the real StreamService, bus and pool.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from core import codec
from core.errors import PoisonMessage
from core.metrics import Metrics
from core.service import run_service
from core.settings import Settings
from core.stream import Emission, OutMessage, Record, RecordProcessor, Sink, StreamService

IN = os.environ.get("ECHO_IN", "echo.in")
OUT = os.environ.get("ECHO_OUT", "echo.out")
SLOW_MS = int(os.environ.get("ECHO_SLOW_MS", "0"))


class EchoProcessor(RecordProcessor):
    def decode(self, topic: str, value: bytes | None) -> Any:
        obj = codec.loads(value)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) \
                or not isinstance(obj.get("n"), int):
            raise PoisonMessage("schema: need id:str and n:int")
        return obj

    def process_records(self, records: Sequence[Record], now_ms: int) -> Emission:
        out = Emission(rows=[])
        for r in records:
            doubled = {"id": r.value["id"], "n2": r.value["n"] * 2}
            out.messages.append(OutMessage(OUT, r.key, codec.dumps(doubled)))
            out.rows.append((r.value["id"], r.value["n"] * 2, r.partition, r.offset))
        return out


def sink(conn: psycopg.Connection[Any], rows: list[tuple[str, int, int, int]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO echo_rows (id, n2, src_partition, src_offset) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET n2 = EXCLUDED.n2, writes = echo_rows.writes + 1", rows)
    if SLOW_MS:
        time.sleep(SLOW_MS / 1000)


class EchoService(StreamService):
    name = "echo"
    group_id = os.environ.get("ECHO_GROUP", "echo")
    input_topics = (IN,)
    batch_size = int(os.environ.get("ECHO_BATCH", "500"))

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        super().__init__(settings, metrics)

    def build_processor(self) -> EchoProcessor:
        return EchoProcessor()

    def build_sink(self) -> Sink:
        return sink


if __name__ == "__main__":
    sys.exit(run_service(EchoService, EchoService.name))
