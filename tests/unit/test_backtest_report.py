"""backtest.report: one self-contained, escaped report.html with embedded charts."""

from __future__ import annotations

import base64
import re

import numpy as np

from backtest.metrics import compute_metrics, per_strategy
from backtest.report import MAX_TRADE_ROWS, plot_indices, write_report
from backtest.trades import Trade

CASH = 100_000.0
EVIL = "<script>alert('x')</script>"
IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
# anything the browser would fetch: src/href attributes, CSS url(...) and @import, to an absolute or scheme-relative URL
EXTERNAL_LOAD_RE = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.IGNORECASE)


def curve(n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Minute bars from 2024-03-04 09:15 IST, a random walk (longer than the plotting cap)."""
    ts = 1_709_523_900_000 + np.arange(n, dtype=np.int64) * 60_000
    eq = CASH * np.cumprod(1 + np.random.default_rng(0).normal(0, 5e-4, n))
    return ts, eq


def make_trades(ts: np.ndarray, n: int = 3) -> list[Trade]:
    names = ["ema_cross", EVIL, "breakout"]
    return [Trade(names[i % 3], f"SYM{i}", 1000 + i, "LONG" if i % 2 else "SHORT", 10, int(ts[i]), 100.0 + i,
                  int(ts[i + 1]), 101.5 + i, 15.0 - 7 * (i % 3), 1.25) for i in range(n)]


def write(tmp_path, trades, ts, eq, params=None):
    metrics = compute_metrics(ts, eq, trades, initial_cash=CASH)
    path = write_report(tmp_path / "report.html", title=f"Run {EVIL}", metrics=metrics,
                        per_strategy=per_strategy(trades), trades=trades, ts_ms=ts, equity=eq,
                        params=params or {"strategies": ["ema_cross"], "fast": 9, "note": EVIL})
    return path, path.read_text(encoding="utf-8"), metrics


def test_report_when_written_then_holds_metrics_trades_breakdown_and_params(tmp_path):
    ts, eq = curve()
    trades = make_trades(ts)

    path, text, metrics = write(tmp_path, trades, ts, eq)

    assert path == tmp_path / "report.html" and text.startswith("<!DOCTYPE html>")
    for key in ("total_return_pct", "sharpe", "max_drawdown_pct", "profit_factor", "exposure_pct"):
        assert f"<td class=\"t\">{key}</td>" in text
    assert f"{metrics['final_equity']:,.2f}" in text and "2024-03-04T09:15:00+05:30" in text
    for t in trades:
        assert f">{t.symbol}</td>" in text and f">{t.instrument_token}</td>" in text
    assert text.count("<td class=\"t\">ema_cross</td>") == 2  # trade row + per-strategy row
    assert "<h2>Per strategy</h2>" in text and "<h2>Parameters</h2>" in text
    assert "<td class=\"t\">fast</td><td class=\"t\">9</td>" in text


def test_report_embeds_both_charts_as_png_data_uris(tmp_path):
    ts, eq = curve()
    _, text, _ = write(tmp_path, make_trades(ts), ts, eq)

    images = IMG_RE.findall(text)

    assert len(images) == 2 and text.count("data:image/png;base64,") == 2
    assert 'alt="equity curve"' in text and 'alt="drawdown"' in text
    assert all(base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n") for b in images)


def test_report_loads_nothing_from_the_network(tmp_path):
    ts, eq = curve()
    _, text, _ = write(tmp_path, make_trades(ts), ts, eq, params={"url": "https://example.com/x"})

    assert EXTERNAL_LOAD_RE.findall(text) == []
    assert "<script" not in text.lower() and "<link" not in text.lower()
    # the checker itself does catch loads
    for bad in ('<img src="https://x/y.png">', "<a href='//cdn/x'>", "background:url( http://x/y)",
                '@import "https://fonts/x.css"', "<script src=HTTP://x.js>"):
        assert EXTERNAL_LOAD_RE.search(bad), bad


def test_report_escapes_a_malicious_strategy_name_and_title(tmp_path):
    ts, eq = curve(100)
    _, text, _ = write(tmp_path, make_trades(ts), ts, eq)

    assert EVIL not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<title>Run &lt;script&gt;" in text


def test_report_caps_the_trade_table_with_a_note(tmp_path):
    ts, eq = curve(MAX_TRADE_ROWS + 10)
    trades = make_trades(ts, MAX_TRADE_ROWS + 3)

    _, text, _ = write(tmp_path, trades, ts, eq)

    assert f"Showing the first {MAX_TRADE_ROWS:,} of {MAX_TRADE_ROWS + 3:,} trades" in text
    assert f"SYM{MAX_TRADE_ROWS - 1}<" in text and f"SYM{MAX_TRADE_ROWS}<" not in text


def test_report_into_a_directory_writes_report_html_and_handles_no_trades(tmp_path):
    ts, eq = curve(1)
    path = write_report(tmp_path, title="empty", metrics=compute_metrics(ts, eq, [], initial_cash=CASH),
                        per_strategy=[], trades=[], ts_ms=ts, equity=eq, params={})
    assert path == tmp_path / "report.html"
    assert "No trades." in path.read_text(encoding="utf-8")


def test_plot_indices_downsample_keeps_the_extremes_and_the_ends():
    _, eq = curve(100_000)
    keep = plot_indices(eq, 2000)
    assert keep.size <= 2002 and np.all(np.diff(keep) > 0)
    assert {0, eq.size - 1, int(np.argmin(eq)), int(np.argmax(eq))} <= set(keep.tolist())
    assert np.array_equal(plot_indices(eq[:50], 2000), np.arange(50))
