"""IST (``Asia/Kolkata``: UTC+05:30, no DST): the one timezone constant and time-text parser.

Session logic is in IST; messages carry epoch milliseconds UTC (DESIGN section 4).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")

_FORMATS = ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_ist(text: str) -> datetime:
    """An aware datetime from ``YYYY-MM-DD[ HH:MM[:SS]]`` (naive means IST) or ISO with an offset.

    Raises ``ValueError`` naming the text when nothing matches.
    """
    s = text.strip().replace("T", " ")
    for fmt in _FORMATS:
        try:
            dt = datetime.strptime(s, fmt)
        except ValueError:
            continue
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=IST)
    raise ValueError(f"not a date/time: {text!r} (want YYYY-MM-DD[ HH:MM[:SS]], naive = IST)")


def epoch_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(dt.timestamp() * 1000)
