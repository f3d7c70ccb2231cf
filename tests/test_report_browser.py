"""The interactive report in a real browser: headless Chromium (Debian's ``chromium``) opens
report.html of a store made by a real small sweep, logs no console message and draws its
charts (the screenshot is not blank, every chart container holds a plotly SVG)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from PIL import Image

from kpbench.results.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARTS = ("time", "wins", "pareto", "memory", "status")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"),
]


def chromium(page, *args, timeout=120) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file; stderr carries the page's console (CONSOLE lines)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
               "--window-size=1400,3200", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    import report_store

    root = report_store.make_store(tmp_path_factory.mktemp("browser") / "results")
    return write_report(root)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_loads_without_console_messages_and_draws_every_chart(report_page):
    result = chromium(report_page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert 'data-kp-drawn="1"' in dom      # interactive.js ran to its end once
    for chart in CHARTS:
        container = re.search(f'<div id="kp-{chart}"[^>]*>(.*?)</div></div>', dom, re.S)
        assert container and "main-svg" in container.group(1), f"chart {chart} did not draw"
    assert "nothing to show" not in dom.split('id="kp-time"')[1].split('id="kp-wins"')[0]


def test_report_screenshot_is_not_blank(report_page, tmp_path):
    shot = tmp_path / "report.png"
    result = chromium(report_page, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 3200)
    charts = image.crop((0, 100, 1400, 2400))            # where the charts are
    colors = charts.getcolors(maxcolors=1 << 20)
    non_white = sum(n for n, rgb in colors if min(rgb) < 235)
    assert len(colors) > 200 and non_white / (charts.width * charts.height) > 0.02
    shutil.copy(shot, report_page.with_name("screenshot.png"))   # kept beside the report


@pytest.fixture(scope="module")
def peers_page(tmp_path_factory):
    import report_store

    from kpbench.backends import availability

    missing = [b for b in report_store.PEERS if not availability()[b][0]]
    if missing:
        pytest.skip(f"peers not available here: {', '.join(missing)}")
    root = report_store.make_peers_store(tmp_path_factory.mktemp("peers") / "results")
    return write_report(root)


def test_libraries_side_by_side_renders_with_every_peer(peers_page):
    """The side-by-side view of a real sweep of every peer: one table naming each of them
    (FlashSinkhorn's interpreted speed refusal in its note) and its time-vs-error chart,
    drawn by Chromium without a console message."""
    result = chromium(peers_page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_lines(result.stderr) == []
    view = result.stdout.split("<h2>Libraries side by side</h2>")[1].split("<h2>")[0]
    assert "<h3>sinkhorn at N=60 on cpu</h3>" in view
    table = view.split("<table>")[1].split("</table>")[0]
    import report_store

    for backend in report_store.PEERS:
        assert f"<td>{backend}</td>" in table, backend
    assert "interpreted: correctness only" in table
    assert '<img src="data:image/png;base64,' in view and "yes" in table   # a Pareto front


def test_who_wins_where_map_compares_across_dtype_and_counts_singles(tmp_path):
    """A store where numpy ran float64 and torch float32 only: the map draws one cell
    compared across dtypes (saying so) instead of grey 'only X' cells, and its title counts
    the configurations where one backend alone was timed."""
    from test_report import sweep_row, write_sweeps

    write_sweeps(tmp_path, [
        sweep_row(backend="numpy", N=1000, time=0.010, dtype="float64"),
        sweep_row(backend="torch", N=1000, time=0.002, dtype="float32"),
        sweep_row(backend="torch", N=1000, time=0.002, dtype="float32", blur=0.5)])
    result = chromium(write_report(tmp_path), "--dump-dom")
    assert result.returncode == 0 and console_lines(result.stderr) == [], result.stderr[-2000:]
    wins = re.search('<div id="kp-wins"[^>]*>(.*?)</div></div>', result.stdout, re.S).group(1)
    assert "torch 5.00x (float32 vs numpy float64, across dtypes)" in wins
    assert "1 configuration(s) and 1 cell(s) had a single backend timed: not drawn" in wins
    assert "only torch" not in wins and "only numpy" not in wins


def test_the_time_chart_draws_the_machine_limit_when_asked(report_page, tmp_path):
    html = report_page.read_text()
    box = 'id="kp-time-limit"'
    assert html.count(box) == 1 and '"limit_s": ' in html   # speed rows carry their limit
    checked = tmp_path / "report.html"
    checked.write_text(html.replace(box, box + " checked"))
    for page, drawn in ((report_page, False), (checked, True)):
        result = chromium(page, "--dump-dom")
        assert result.returncode == 0 and console_lines(result.stderr) == [], result.stderr[-2000:]
        time_chart = result.stdout.split('id="kp-time"')[1].split('id="kp-wins"')[0]
        assert ("(limit)" in time_chart) is drawn
