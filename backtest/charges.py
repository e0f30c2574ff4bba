"""Zerodha's charges on one executed order (``configs/charges.yaml``), and the backtester's simpler options.

:class:`ChargeModel` prices one fill (one executed order at one price) at the rates in force on its
trade day: brokerage, STT, exchange transaction charges, SEBI fee, stamp duty and GST. Amounts are
computed exactly (``Decimal``) from the order's value ``qty * price`` (the premium for options).

Rounding (``round_to_paise=True``, the default) follows Zerodha's brokerage calculator and contract
notes: brokerage, exchange charges, SEBI fee and stamp duty are each rounded to the paisa, STT to the
nearest rupee (Zerodha: "STT/CTT charged will be rounded off to the nearest rupee", every segment),
both half up (2.525 -> 2.53, 122.5 -> 123); GST is 18% of the *rounded* brokerage + exchange + SEBI,
then rounded to the paisa. A contract note rounds the day's total per scrip, not each fill, so many
small fills can differ from it by paise (STT by up to a rupee per fill): pass
``round_to_paise=False`` for unrounded amounts to aggregate and round yourself.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import Field, field_validator, model_validator

from core.config import StrictModel, load_config
from core.settings import load_settings

FILE_NAME = "charges.yaml"
SIDES = ("BUY", "SELL")
#: Kite exchange -> the venue key of ``exchange_txn_pct``.
VENUES = {"NSE": "nse", "NFO": "nse", "BSE": "bse", "BFO": "bse"}

Pct = Annotated[Decimal, Field(ge=0, le=100, description="percent of the order's value")]
Rupees = Annotated[Decimal, Field(ge=0)]

_PAISA = Decimal("0.01")
_RUPEE = Decimal("1")
_HUNDRED = Decimal(100)


# -- the file ---------------------------------------------------------------------------------------
class Brokerage(StrictModel):
    """Per executed order: ``pct`` of its value, capped at ``max_per_order`` rupees; or a flat ``per_order``."""

    pct: Pct | None = None
    max_per_order: Rupees | None = Field(default=None, description="cap on the pct amount (with pct only)")
    per_order: Rupees | None = Field(default=None, description="flat rupees per executed order")

    @model_validator(mode="after")
    def _one_kind(self) -> Brokerage:
        if (self.pct is None) == (self.per_order is None):
            raise ValueError("give either pct (optionally with max_per_order) or per_order")
        if self.per_order is not None and self.max_per_order is not None:
            raise ValueError("max_per_order goes with pct, not with per_order")
        return self

    def amount(self, value: Decimal, rounded: bool) -> Decimal:
        if self.per_order is not None:
            return self.per_order
        fee = value * (self.pct or 0) / _HUNDRED
        if rounded:
            fee = _round(fee, _PAISA)
        return fee if self.max_per_order is None else min(fee, self.max_per_order)


class SideRates(StrictModel):
    """A rate by side of the order (0 where the side pays nothing)."""

    buy: Pct = Decimal(0)
    sell: Pct = Decimal(0)

    def of(self, side: str) -> Decimal:
        return self.buy if side == "BUY" else self.sell


class VenueRates(StrictModel):
    """Exchange transaction charges by venue: ``nse`` (NSE, NFO) and ``bse`` (BSE, BFO)."""

    nse: Pct
    bse: Pct

    def of(self, exchange: str) -> Decimal:
        venue = VENUES.get(exchange)
        if venue is None:
            raise ValueError(f"no exchange charges for exchange {exchange!r} (expected one of {', '.join(VENUES)})")
        return self.nse if venue == "nse" else self.bse


class ChargePeriod(StrictModel):
    """The rates of one segment from ``from`` until the next period's ``from``."""

    from_: date = Field(alias="from", description="first trade day these rates apply to")
    brokerage: Brokerage
    stt_pct: SideRates
    exchange_txn_pct: VenueRates
    sebi_pct: Pct
    stamp_pct: SideRates
    gst_pct: Pct = Field(description="on brokerage + exchange transaction charges + SEBI fee")


Periods = Annotated[list[ChargePeriod], Field(min_length=1)]


class Segments(StrictModel):
    """Each segment's periods, ascending by ``from``."""

    delivery: Periods
    intraday: Periods
    futures: Periods
    options: Periods

    @field_validator("delivery", "intraday", "futures", "options")
    @classmethod
    def _ascending(cls, periods: list[ChargePeriod]) -> list[ChargePeriod]:
        for i in range(1, len(periods)):
            if periods[i].from_ <= periods[i - 1].from_:
                raise ValueError(f"periods must ascend by 'from': {i}.from {periods[i].from_} is not after "
                                 f"{i - 1}.from {periods[i - 1].from_}")
        return periods


class ChargesConfig(StrictModel):
    """The whole file."""

    segments: Segments


SEGMENTS: tuple[str, ...] = tuple(Segments.model_fields)


# -- amounts ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Charges:
    """Rupees paid on one executed order (or, added up, on several)."""

    brokerage: float = 0.0
    stt: float = 0.0
    exchange: float = 0.0  # exchange transaction charges
    sebi: float = 0.0
    stamp: float = 0.0
    gst: float = 0.0

    @property
    def total(self) -> float:
        return self.brokerage + self.stt + self.exchange + self.sebi + self.stamp + self.gst

    def __add__(self, other: Charges) -> Charges:
        return Charges(self.brokerage + other.brokerage, self.stt + other.stt, self.exchange + other.exchange,
                       self.sebi + other.sebi, self.stamp + other.stamp, self.gst + other.gst)


NO_CHARGES = Charges()


class ChargeCalculator(Protocol):
    """What the backtester asks: the charges on one executed order."""

    def charges(self, segment: str, side: str, qty: int, price: float, day: date, *,
                exchange: str = "NSE") -> Charges: ...


def _round(x: Decimal, step: Decimal) -> Decimal:
    return x.quantize(step, rounding=ROUND_HALF_UP)


def _check_order(segment: str, side: str, qty: int, price: float) -> None:
    if segment not in SEGMENTS:
        raise ValueError(f"unknown charges segment {segment!r} (expected one of {', '.join(SEGMENTS)})")
    if side not in SIDES:
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    if qty < 1:
        raise ValueError(f"qty must be >= 1, got {qty}")
    if not (math.isfinite(price) and price >= 0):
        raise ValueError(f"price must be a finite number >= 0, got {price}")


class ChargeModel:
    """Zerodha's charges on one executed order, at the rates in force on its trade day (see module doc)."""

    def __init__(self, config: ChargesConfig, *, round_to_paise: bool = True) -> None:
        self.config = config
        self.round_to_paise = round_to_paise
        self._periods: dict[str, list[ChargePeriod]] = {s: getattr(config.segments, s) for s in SEGMENTS}
        self._starts = {s: [p.from_ for p in ps] for s, ps in self._periods.items()}

    def period(self, segment: str, day: date) -> ChargePeriod:
        """The period in force on ``day``: the last one whose ``from`` <= day."""
        starts = self._starts.get(segment)
        if starts is None:
            raise ValueError(f"unknown charges segment {segment!r} (expected one of {', '.join(SEGMENTS)})")
        i = bisect.bisect_right(starts, day) - 1
        if i < 0:
            raise ValueError(f"no {segment} charges before {starts[0]} (trade day {day}): add a period "
                             f"to {FILE_NAME}")
        return self._periods[segment][i]

    def charges(self, segment: str, side: str, qty: int, price: float, day: date, *,
                exchange: str = "NSE") -> Charges:
        """Charges on one executed order of ``qty`` at ``price`` on ``day`` (``exchange``: NSE, BSE, NFO, BFO)."""
        _check_order(segment, side, qty, price)
        p = self.period(segment, day)
        value = Decimal(qty) * Decimal(str(price))
        rounded = self.round_to_paise
        brokerage = p.brokerage.amount(value, rounded)
        stt = value * p.stt_pct.of(side) / _HUNDRED
        exch = value * p.exchange_txn_pct.of(exchange) / _HUNDRED
        sebi = value * p.sebi_pct / _HUNDRED
        stamp = value * p.stamp_pct.of(side) / _HUNDRED
        if rounded:
            stt = _round(stt, _RUPEE)
            exch, sebi, stamp = _round(exch, _PAISA), _round(sebi, _PAISA), _round(stamp, _PAISA)
        gst = (brokerage + exch + sebi) * p.gst_pct / _HUNDRED
        if rounded:
            gst = _round(gst, _PAISA)
        return Charges(float(brokerage), float(stt), float(exch), float(sebi), float(stamp), float(gst))


class NoCharges:
    """No charges at all (``--charges none``): the gross result."""

    def charges(self, segment: str, side: str, qty: int, price: float, day: date, *,
                exchange: str = "NSE") -> Charges:
        _check_order(segment, side, qty, price)
        return NO_CHARGES


@dataclass(frozen=True, slots=True)
class BpsCharges:
    """A flat ``bps`` basis points of each order's value (``--charges bps=N``), reported as brokerage."""

    bps: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bps) and self.bps >= 0):
            raise ValueError(f"bps must be a finite number >= 0, got {self.bps}")

    def charges(self, segment: str, side: str, qty: int, price: float, day: date, *,
                exchange: str = "NSE") -> Charges:
        _check_order(segment, side, qty, price)
        return Charges(brokerage=self.bps / 10_000 * qty * price)


# -- mapping and loading ----------------------------------------------------------------------------
def segment_for(product: str, exchange: str, instrument_type: str | None = None) -> str:
    """The charges segment of an order: Kite ``product``, ``exchange`` and ``instrument_type`` (upper case).

    NSE/BSE equity: MIS -> intraday, CNC and NRML -> delivery. NFO/BFO: FUT -> futures, CE/PE -> options.
    """
    if product not in ("CNC", "MIS", "NRML"):
        raise ValueError(f"product must be CNC, MIS or NRML, got {product!r}")
    if exchange in ("NSE", "BSE"):
        if instrument_type not in (None, "EQ"):
            raise ValueError(f"instrument_type {instrument_type!r} on {exchange}: expected EQ (or none)")
        return "intraday" if product == "MIS" else "delivery"
    if exchange in ("NFO", "BFO"):
        if product == "CNC":
            raise ValueError(f"CNC on {exchange}: F&O orders are NRML or MIS")
        if instrument_type == "FUT":
            return "futures"
        if instrument_type in ("CE", "PE"):
            return "options"
        raise ValueError(f"instrument_type on {exchange} must be FUT, CE or PE, got {instrument_type!r}")
    raise ValueError(f"no charges for exchange {exchange!r} (expected NSE, BSE, NFO or BFO)")


def default_path() -> Path:
    """``$CHARGES_CONFIG`` or ``<TRADESTACK_CONFIG_DIR>/charges.yaml``."""
    env = os.environ.get("CHARGES_CONFIG")
    return Path(env) if env else load_settings().config_dir / FILE_NAME


def load_charges(path: str | Path | None = None, *, round_to_paise: bool = True) -> ChargeModel:
    """Load and validate the file (one-line :class:`core.errors.ConfigError` on any problem)."""
    config = load_config(Path(path) if path else default_path(), ChargesConfig)
    return ChargeModel(config, round_to_paise=round_to_paise)


def parse_charges_option(text: str, path: str | Path | None = None) -> ChargeCalculator:
    """The CLI's ``--charges zerodha|none|bps=N`` (``path``: the zerodha file, default :func:`default_path`).

    Raises ``ValueError`` with one line on a bad option (argparse: wrap it in ``ArgumentTypeError``),
    :class:`core.errors.ConfigError` on a bad charges file.
    """
    spec = text.strip().lower()
    if spec == "zerodha":
        return load_charges(path)
    if spec == "none":
        return NoCharges()
    if spec.startswith("bps="):
        raw = spec.removeprefix("bps=").strip()
        try:
            bps = float(raw)
        except ValueError:
            raise ValueError(f"--charges {text!r}: N must be a number of basis points, e.g. bps=5") from None
        if not (math.isfinite(bps) and bps >= 0):
            raise ValueError(f"--charges {text!r}: N must be a finite number >= 0 of basis points")
        return BpsCharges(bps)
    raise ValueError(f"--charges: expected zerodha, none or bps=N (basis points of turnover), got {text!r}")


CONFIG_CHECKS = [(FILE_NAME, load_charges)]
