"""``kpbench compare`` as a page: the per-point ratio plot of two runs, regressions highlighted.

One self-contained HTML file (plotly.js inlined, as report.html): time ratios new/baseline
per point on a log axis, coloured by verdict (regression, ok -> failed, improvement,
within noise, unchanged), the threshold and its inverse dotted, memory ratios as a second
trace; hover gives the point, both times and how the distributions were judged. The text
table of :func:`kpbench.results.compare.format_comparison` follows the plot.
"""
from __future__ import annotations

import pathlib

from kpbench.results.compare import Comparison, PointComparison, format_comparison
from kpbench.results.document import Bold, Code, Document, Heading, Para, Raw, render_html
from kpbench.results.escape import html_text, plotly_text
from kpbench.results.files import replace_file
from kpbench.results.format import fmt_seconds
from kpbench.results.interactive import plotly_script

VERDICT_COLORS = {"regression": "#d62728", "ok -> failed": "#7f0000", "improvement": "#2ca02c",
                  "within noise": "#ff7f0e", "unchanged": "#7f7f7f"}


def verdict(point: PointComparison) -> str:
    if "status" in point.regressed:
        return "ok -> failed"
    if point.failing:
        return "regression"
    if "time" in point.improved or "mem" in point.improved:
        return "improvement"
    return "within noise" if point.noise else "unchanged"


def ratio_figure(result: Comparison):
    """The plotly figure: one marker per point and verdict, threshold lines."""
    import plotly.graph_objects as go

    points = sorted(result.points, key=lambda p: p.label)
    fig = go.Figure()
    for name, color in VERDICT_COLORS.items():
        chosen = [(i, p) for i, p in enumerate(points) if verdict(p) == name]
        if not chosen:
            continue
        # a point that failed in NEW has no ratio: drawn at the top threshold line
        y = [p.ratios.get("time", result.threshold) for _, p in chosen]
        fig.add_trace(go.Scatter(
            x=[i for i, _ in chosen], y=y, mode="markers", name=name,
            marker=dict(color=color, size=10 if name != "unchanged" else 7,
                        symbol="x" if name == "ok -> failed" else "circle"),
            text=[_hover(p) for _, p in chosen], hovertemplate="%{text}<extra></extra>"))
    mem = [(i, p.ratios["mem"]) for i, p in enumerate(points) if "mem" in p.ratios]
    if mem:
        fig.add_trace(go.Scatter(x=[i for i, _ in mem], y=[r for _, r in mem], mode="markers",
                                 name="memory ratio", marker=dict(symbol="diamond-open", size=8)))
    for level in (result.threshold, 1 / result.threshold):
        fig.add_hline(y=level, line=dict(dash="dot", color="#c00"))
    fig.update_layout(title="time ratio new / baseline per point (dotted: the threshold)",
                      xaxis_title="point (sorted by name; hover for it)", yaxis_title="new / baseline",
                      yaxis_type="log", height=500, hovermode="closest")
    return fig


def _hover(p: PointComparison) -> str:
    lines = [p.label, f"{verdict(p)}: {p.base_status} -> {p.new_status}"]
    if "time" in p.ratios:
        lines.append(f"time {fmt_seconds(p.base.get('time'))} -> {fmt_seconds(p.new.get('time'))} "
                     f"({p.ratios['time']:.3f}x)")
    if p.evidence:
        lines.append(p.evidence)
    return "<br>".join(plotly_text(line) for line in lines)


def write_page(result: Comparison, path: str | pathlib.Path, baseline: str, new: str) -> pathlib.Path:
    """Write the comparison page to ``path``; returns it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = Document(title="kpbench compare", head_html=plotly_script())
    doc.add(Para(["baseline: ", Code(baseline), " — new: ", Code(new), " — verdict: ",
                  Bold("REGRESSION" if result.failed else "no regression")]))
    if result.points:
        figure = ratio_figure(result).to_html(full_html=False, include_plotlyjs=False)
        doc.add(Raw(figure))
    doc.add(Heading("Points"), Raw(f"<pre>{html_text(format_comparison(result))}</pre>"))
    return replace_file(path, render_html(doc).encode("utf-8"))


__all__ = ["write_page", "ratio_figure", "verdict", "VERDICT_COLORS"]
