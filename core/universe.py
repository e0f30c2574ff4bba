"""The instrument universe (``configs/tokens.csv``) and Kite token arithmetic.

A Kite ``instrument_token`` packs the exchange token and a segment code:
``instrument_token = exchange_token << 8 | segment_code``. The segment decides
the integer price divisor used on the WebSocket (paise for most segments) and
whether the instrument is tradable (segment 9, indices, is not). The codes match
``kiteconnect.ticker.KiteTicker.EXCHANGE_MAP``.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from core.config import StrictModel, load_csv_rows
from core.errors import ConfigError

#: Segment codes, as in ``KiteTicker.EXCHANGE_MAP``.
SEGMENT_CODES: dict[str, int] = {
    "NSE": 1,
    "NFO": 2,
    "CDS": 3,
    "BSE": 4,
    "BFO": 5,
    "BCD": 6,
    "MCX": 7,
    "MCXSX": 8,
    "INDICES": 9,
    "NCO": 12,
}
SEGMENT_INDICES = 9
SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_NCO = 12


def segment_of(token: int) -> int:
    """The segment code of an instrument token (its low byte)."""
    return token & 0xFF


def price_divisor(token: int) -> int:
    """Integer price divisor on the wire: CDS 10,000,000; BCD (and NCO) 10,000; else 100."""
    seg = segment_of(token)
    if seg == SEGMENT_CDS:
        return 10_000_000
    if seg in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000
    return 100


def is_tradable(token: int) -> bool:
    """False for indices (segment 9), True otherwise."""
    return segment_of(token) != SEGMENT_INDICES


def make_token(exchange_token: int, segment_code: int) -> int:
    """Compose an instrument token from an exchange token and a segment code."""
    return exchange_token << 8 | segment_code


def expected_segment_code(exchange: str, segment: str) -> int:
    """Segment code implied by the ``exchange``/``segment`` columns (``INDICES`` wins)."""
    if segment.upper() == "INDICES":
        return SEGMENT_INDICES
    return SEGMENT_CODES[exchange.upper()]


class Instrument(StrictModel):
    """One row of ``configs/tokens.csv`` (a subset of Kite's instrument dump).

    Fields are declared so that each cross-field check runs on the key it is
    about (errors read ``tokens.csv:12: tick_size: ...``).
    """

    exchange_token: int = Field(gt=0, lt=2**24, description="exchange's own token")
    tradingsymbol: str = Field(min_length=1, description="e.g. INFY, NIFTY 50, USDINR25DECFUT")
    name: str = Field(default="", description="company or underlying name")
    exchange: str = Field(pattern=r"^(NSE|BSE|NFO|CDS|BFO|BCD|MCX)$", description="Kite exchange code")
    segment: str = Field(min_length=1, description="Kite segment, e.g. NSE, BSE, NFO-FUT, CDS-FUT, INDICES")
    instrument_type: str = Field(pattern=r"^(EQ|FUT|CE|PE)$", description="EQ, FUT, CE or PE")
    instrument_token: int = Field(gt=0, lt=2**32,
                                  description="Kite instrument token (exchange_token<<8|segment)")
    tick_size: float = Field(gt=0, description="minimum price step in rupees")
    lot_size: int = Field(ge=0, description="order quantity multiple (0 for indices)")
    last_price: float = Field(gt=0, description="reference price (seeds the simulator's walk)")

    @field_validator("instrument_token")
    @classmethod
    def _token_matches_segment(cls, v: int, info: ValidationInfo) -> int:
        d = info.data
        if {"exchange_token", "exchange", "segment"} <= d.keys():
            code = expected_segment_code(d["exchange"], d["segment"])
            want = make_token(d["exchange_token"], code)
            if v != want:
                raise ValueError(f"{v} is not exchange_token<<8|{code} = {want}")
        return v

    @field_validator("tick_size")
    @classmethod
    def _tick_on_wire_grid(cls, v: float, info: ValidationInfo) -> float:
        if "instrument_token" in info.data:
            div = price_divisor(info.data["instrument_token"])
            if not _is_integral(v * div):
                raise ValueError(f"{v} is not a whole number of 1/{div} price units")
        return v

    @field_validator("lot_size")
    @classmethod
    def _lot_for_tradable(cls, v: int, info: ValidationInfo) -> int:
        if "instrument_token" in info.data and is_tradable(info.data["instrument_token"]) and v < 1:
            raise ValueError("must be >= 1 for a tradable instrument")
        return v

    @field_validator("last_price")
    @classmethod
    def _price_on_tick_grid(cls, v: float, info: ValidationInfo) -> float:
        tick = info.data.get("tick_size")
        if tick and not _is_integral(v / tick):
            raise ValueError(f"{v} is not a multiple of tick_size {tick}")
        return v

    @property
    def segment_code(self) -> int:
        """The segment code (low byte of the token)."""
        return segment_of(self.instrument_token)

    @property
    def price_divisor(self) -> int:
        """Integer price divisor of this instrument's segment."""
        return price_divisor(self.instrument_token)

    @property
    def tradable(self) -> bool:
        """False for indices."""
        return is_tradable(self.instrument_token)

    @property
    def key(self) -> str:
        """Kite quote key ``EXCHANGE:TRADINGSYMBOL``, e.g. ``NSE:INFY``."""
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def tick_units(self) -> int:
        """Tick size in integer wire units (``tick_size * price_divisor``)."""
        return round(self.tick_size * self.price_divisor)


def _is_integral(x: float) -> bool:
    return math.isclose(x, round(x), rel_tol=0, abs_tol=1e-6)


def load_universe(path: str | Path) -> list[Instrument]:
    """Load and validate ``tokens.csv``; bad rows, duplicate tokens or keys raise a one-line ConfigError."""
    rows = load_csv_rows(path, Instrument)
    if not rows:
        raise ConfigError(f"{path}: no instruments")
    seen_tokens: dict[int, int] = {}
    seen_keys: dict[str, int] = {}
    for lineno, inst in enumerate(rows, start=2):
        if inst.instrument_token in seen_tokens:
            raise ConfigError(f"{path}:{lineno}: instrument_token: duplicate {inst.instrument_token} "
                              f"(first at line {seen_tokens[inst.instrument_token]})")
        if inst.key in seen_keys:
            raise ConfigError(f"{path}:{lineno}: tradingsymbol: duplicate {inst.key} "
                              f"(first at line {seen_keys[inst.key]})")
        seen_tokens[inst.instrument_token] = lineno
        seen_keys[inst.key] = lineno
    return rows


def by_token(instruments: list[Instrument]) -> dict[int, Instrument]:
    """Index instruments by ``instrument_token``."""
    return {i.instrument_token: i for i in instruments}


def by_key(instruments: list[Instrument]) -> dict[str, Instrument]:
    """Index instruments by ``EXCHANGE:TRADINGSYMBOL``."""
    return {i.key: i for i in instruments}
