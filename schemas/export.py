"""Write ``schemas/<name>.schema.json`` for every contract (``python -m schemas.export``).

``--check`` exits 1 if a committed file differs from what the models generate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.models import CONTRACTS

SCHEMA_DIR = Path(__file__).resolve().parent


def render(name: str) -> str:
    """The JSON Schema text for contract ``name`` (stable formatting)."""
    schema = CONTRACTS[name].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://tradestack.dev/schemas/{name}.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    ap.add_argument("--dir", type=Path, default=SCHEMA_DIR)
    args = ap.parse_args(argv)
    drift = []
    for name in CONTRACTS:
        path = args.dir / f"{name}.schema.json"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                drift.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if drift:
        print(f"schemas out of date: {', '.join(drift)} (run python -m schemas.export)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
