"""A backtest's self-contained ``report.html``: metrics, equity and drawdown charts, trades, parameters.

One file that opens with no network: inline CSS, charts rendered by matplotlib (Agg) to PNG and
embedded as base64 ``data:`` URIs, every text HTML-escaped. matplotlib is imported only when a
report is written, so the rest of the backtester runs without it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backtest.metrics import MetricValue, drawdown_series, ist_iso
from backtest.trades import Trade
from core.sessions import IST_OFFSET_MS

MAX_TRADE_ROWS = 5000
MAX_PLOT_POINTS = 2000

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.t,th.t{text-align:left}
img{max-width:100%;display:block;margin:.5em 0}
.note{color:#a60}
"""
_TRADE_COLUMNS = ("strategy", "symbol", "instrument_token", "side", "qty", "entry", "entry_price",
                  "exit", "exit_price", "pnl", "charges", "net_pnl")


def plot_indices(values: npt.NDArray[np.float64], max_points: int = MAX_PLOT_POINTS) -> npt.NDArray[np.intp]:
    """Indices of at most ~``max_points`` points keeping each bucket's min and max (so extremes stay visible)."""
    n = values.size
    if n <= max_points:
        return np.arange(n)
    buckets = np.array_split(np.arange(n), max(1, max_points // 2))
    keep = {0, n - 1}
    for b in buckets:
        seg = values[b]
        keep.update((int(b[np.argmin(seg)]), int(b[np.argmax(seg)])))
    return np.array(sorted(keep), dtype=np.intp)


def _fmt(value: Any) -> str:
    """A cell's text: floats to 2 decimals with separators, None as a dash, the rest as ``str``."""
    if value is None:
        return "\u2014"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_cols: int = 1) -> str:
    """An HTML table; the first ``text_cols`` columns are left-aligned text, every cell escaped."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="t"' if i < text_cols else ""
        return f"<{tag}{cls}>{html.escape(_fmt(v))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _trade_row(t: Trade) -> list[Any]:
    return [t.strategy, t.symbol, t.instrument_token, t.side, t.qty, ist_iso(t.entry_ts), t.entry_price,
            None if t.exit_ts is None else ist_iso(t.exit_ts), t.exit_price, t.pnl, t.charges, t.net_pnl]


def _png_data_uri(ts_ms: npt.NDArray[np.int64], values: npt.NDArray[np.float64], *, title: str,
                  ylabel: str, fill: bool = False) -> str:
    """A line chart (x in IST) as a ``data:image/png;base64,`` URI; matplotlib's OO API, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keep = plot_indices(values)
    x = (ts_ms[keep] + IST_OFFSET_MS).astype("datetime64[ms]")  # naive IST wall time for the axis
    y = values[keep]
    fig = Figure(figsize=(11, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(x, y, linewidth=1.0, color="#b22" if fill else "#25a")
    if fill:
        ax.fill_between(x, y, 0.0, color="#b22", alpha=0.25, linewidth=0)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (IST)")
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_report(*, title: str, metrics: Mapping[str, MetricValue], per_strategy: Sequence[Mapping[str, MetricValue]],
                  trades: Sequence[Trade], ts_ms: npt.ArrayLike, equity: npt.ArrayLike,
                  params: Mapping[str, Any]) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>",
             f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>",
             "<h2>Metrics</h2>", _table(("metric", "value"), metrics.items())]
    if eq.size:
        equity_png = _png_data_uri(ts, eq, title="Equity", ylabel="equity")
        dd_png = _png_data_uri(ts, drawdown_series(eq) * 100, title="Drawdown", ylabel="drawdown %", fill=True)
        parts += ["<h2>Equity</h2>", f'<img alt="equity curve" src="{equity_png}">',
                  "<h2>Drawdown</h2>", f'<img alt="drawdown" src="{dd_png}">']
    else:
        parts.append('<p class="note">No equity curve: nothing to chart.</p>')
    parts.append("<h2>Per strategy</h2>")
    if per_strategy:
        header = list(per_strategy[0].keys())
        parts.append(_table(header, ([row.get(k) for k in header] for row in per_strategy)))
    else:
        parts.append("<p>No trades.</p>")
    parts.append(f"<h2>Trades ({len(trades):,})</h2>")
    if len(trades) > MAX_TRADE_ROWS:
        parts.append(f'<p class="note">Showing the first {MAX_TRADE_ROWS:,} of {len(trades):,} trades.</p>')
    parts.append(_table(_TRADE_COLUMNS, (_trade_row(t) for t in trades[:MAX_TRADE_ROWS]), text_cols=4))
    parts += ["<h2>Parameters</h2>",
              _table(("parameter", "value"), ((k, json.dumps(v, default=str, ensure_ascii=False))
                                              for k, v in params.items()), text_cols=2),
              "</body>\n</html>\n"]
    return "\n".join(parts)


def write_report(path: str | Path, *, title: str, metrics: Mapping[str, MetricValue],
                 per_strategy: Sequence[Mapping[str, MetricValue]], trades: Sequence[Trade],
                 ts_ms: npt.ArrayLike, equity: npt.ArrayLike, params: Mapping[str, Any]) -> Path:
    """Write the report to ``path`` (an existing directory gets ``report.html`` inside); returns the file."""
    out = Path(path)
    if out.is_dir():
        out = out / "report.html"
    text = render_report(title=title, metrics=metrics, per_strategy=per_strategy, trades=trades,
                         ts_ms=ts_ms, equity=equity, params=params)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
