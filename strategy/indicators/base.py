"""What every indicator shares: the bar shape it reads, its parameter spec, ``value``/``ready``/``warmup``.

Indicators are the backtester's inner loop, so each is a plain ``__slots__`` class whose
``update`` loads what it needs into locals once and touches only the bar fields it uses.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, ClassVar, NamedTuple, Protocol

# TA-Lib 0.8's fixed zero band (ta_utility.h: TA_EPSILON = 1e-14, ``-eps < v < eps``). Since its #253 fix
# TA-Lib keeps it only for dimensionless quantities (ADX's DI sum); price-unit sums are tested exactly.
TA_EPSILON = 1e-14


class BarLike(Protocol):
    """Anything with these attributes (a bar event, a namedtuple, a dataclass); ts = epoch ms UTC, bucket start."""

    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...
    @property
    def ts(self) -> int: ...


class Param(NamedTuple):
    """One constructor parameter: ``kind`` is ``"int"`` (``>= minimum``) or ``"float"`` (finite, ``> minimum``)."""

    name: str
    kind: str
    default: int | float
    minimum: int | float


class Indicator(ABC):
    """Base class: ``update(bar)`` returns None while warming up, then the output (also kept in ``value``).

    ``warmup`` is the number of bars before the first value (TA-Lib's lookback + 1), so the first
    non-None output is on bar index ``warmup - 1``, the index of TA-Lib's first non-NaN output.
    """

    __slots__ = ("value", "warmup")
    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()

    value: Any
    warmup: int

    @property
    def ready(self) -> bool:
        """True once the first value has been produced."""
        return self.value is not None

    @abstractmethod
    def update(self, bar: BarLike) -> Any:
        """Take one bar; None while warming up, then the value."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every bar seen."""

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """Cross-parameter rules (e.g. macd fast < slow); raise ValueError. Single-parameter rules are in PARAMS."""
        return None  # most indicators have none

    def __repr__(self) -> str:
        args = ", ".join(f"{p.name}={getattr(self, p.name)!r}" for p in self.PARAMS)
        return f"{type(self).__name__}({args})"


def validate_params(cls: type[Indicator], params: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, every value checked; a problem is a ValueError of one line naming indicator and param."""
    spec = {p.name: p for p in cls.PARAMS}
    for key in params:
        if key not in spec:
            expected = ", ".join(spec) if spec else "none"
            raise ValueError(f"{cls.name}: unknown parameter {key!r} (expected: {expected})")
    out: dict[str, Any] = {}
    for p in cls.PARAMS:
        v = params.get(p.name, p.default)
        if p.kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{cls.name}: {p.name} must be an integer (got {v!r})")
            if v < p.minimum:
                raise ValueError(f"{cls.name}: {p.name} must be >= {p.minimum} (got {v})")
        else:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{cls.name}: {p.name} must be a finite number (got {v!r})")
            if v <= p.minimum:
                raise ValueError(f"{cls.name}: {p.name} must be > {p.minimum} (got {v})")
            v = float(v)
        out[p.name] = v
    cls.check(out)
    return out


class WindowExtremes:
    """Highest high and lowest low of the last ``period`` bars, amortised O(1) (monotonic deques).

    Shared by stoch (its %K window) and donchian (the channel); ``push`` returns None until
    ``period`` bars have been seen.
    """

    __slots__ = ("period", "_i", "_hi", "_lo")

    def __init__(self, period: int) -> None:
        self.period = period
        self._i = 0
        self._hi: deque[tuple[int, float]] = deque()  # (index, high), highs decreasing
        self._lo: deque[tuple[int, float]] = deque()  # (index, low), lows increasing

    def push(self, h: float, lo: float) -> tuple[float, float] | None:
        i = self._i
        self._i = i + 1
        hq = self._hi
        while hq and hq[-1][1] <= h:
            hq.pop()
        hq.append((i, h))
        lq = self._lo
        while lq and lq[-1][1] >= lo:
            lq.pop()
        lq.append((i, lo))
        start = i - self.period
        if hq[0][0] <= start:
            hq.popleft()
        if lq[0][0] <= start:
            lq.popleft()
        if start < -1:
            return None
        return hq[0][1], lq[0][1]

