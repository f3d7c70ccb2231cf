"""Pages escape everything: stores whose every string carries a hostile payload.

A real tiny sweep (inline, numpy and torch) gives the clean store; each hostile store holds
the same rows, written back through the store with a payload appended to every string
column (op, backend, kernel, dtype, device, error, host, cpu, run_id, ...), plus a
reproduction table and a figure named with it. report.html and the compare page, opened in
headless Chromium, must run no script of the payload (the marker attribute it would set on
<body> never appears), draw as many plotly charts as the clean pages and show the payload
as text; report.md must hold no HTML and keep its tables' columns. A figure that is a link
to a file outside the results folder is not embedded, a link planted where the report
writes is replaced, not written through, and a report folder that is a link is refused.
"""
from __future__ import annotations

import base64
import io
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kpbench.results import compare as cmp
from kpbench.cli import report as report_cli
from kpbench.results.compare_page import write_page
from kpbench.results.report import write_report
from kpbench.results.schema import SWEEP_SCHEMA
from kpbench.results.selection import load_sweeps, select_run
from kpbench.results.store import SWEEPS, ResultStore
from report_store import sweep_values
from test_report import run_cli
from test_report_browser import CHROMIUM, chromium

# unquoted handlers: a double quote or a backslash would come out of JSON escaped
PWN = "document.body.setAttribute('data-pwned','1')"
PAYLOADS = {
    "script-end": f"</SCRIPT><img src=x onerror={PWN}>",
    "comment-open": "<!--<script>",
    "attribute": f"\"'><svg onload={PWN}><b>",
    "separators": "\u2028\u2029]]>&amp;",
    "markdown": "a|b **c** `d` [e](javascript:alert(1)) $\\pwn$ <http://x>",
}
STRING_COLUMNS = [f.name for f in SWEEP_SCHEMA if pa.types.is_string(f.type) and f.name != "status"]
# display-only columns a sweep leaves empty here: they carry the bare payload
FILLED_WHEN_NULL = ("error", "gpu", "cxxflags", "node_ip")
SPECS = (
    dict(kind="speed", ops=["kernel_product"], N=[100, 200], dtype=["float32", "float64"], repeats=3),
    dict(kind="accuracy", ops=["kernel_product"], N=[100, 200], dtype=["float32", "float64"]),
    dict(kind="memory", ops=["kernel_product"], N=[100, 3000], memory_budget=20_000_000),
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                    "(scripts/install_test_tools.sh)")
pytestmark = pytest.mark.slow


def png_bytes(color="red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "results"
    for values in SPECS:
        sweep_values({"backends": ["numpy", "torch"], "timeout_s": 120, **values}, root)
    return root


def hostile_rows(clean: ResultStore, payload: str) -> list[dict]:
    rows = pa.concat_tables([pq.read_table(p) for p in clean.parts(SWEEPS)]).to_pylist()
    for row in rows:
        for column in STRING_COLUMNS:
            if row[column] is not None:
                row[column] += payload       # distinct values stay distinct: the same charts
            elif column in FILLED_WHEN_NULL:
                row[column] = payload
    return rows


@pytest.fixture(scope="module", params=sorted(PAYLOADS))
def hostile(request, clean_store, tmp_path_factory):
    """(payload, hostile results folder) with report.html and report.md written."""
    payload = PAYLOADS[request.param]
    root = tmp_path_factory.mktemp(request.param) / "results"
    store = ResultStore(root)
    store.append(SWEEPS, hostile_rows(ResultStore(clean_store), payload))
    store.append("flow_1d", [{"loss": "energy" + payload, "backend": "torch", "N": 100, "step": s,
                              "status": "ok", "note": payload, "w2": 0.1 / (s + 1)} for s in range(3)])
    figure = store.figures_dir("flow_1d") / ("flow " + payload.replace("/", "-") + ".png")
    figure.write_bytes(png_bytes())
    write_report(root)
    return payload, root


def dom_text(text: str) -> str:
    """``text`` as a DOM dump (HTML serialisation) writes it inside an element."""
    return text.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace("<", "&lt;").replace(">", "&gt;")


def open_page(page) -> str:
    result = chromium(page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def assert_ran_no_payload(dom: str) -> None:
    body = re.search(r"<body[^>]*>", dom).group()
    assert "data-pwned" not in body, "a script of the payload ran"


def chart_count(dom: str) -> int:
    return dom.count('class="main-svg"')


@pytest.fixture(scope="module")
def clean_pages(clean_store, tmp_path_factory):
    """Plotly SVG counts of the clean report and compare page: what the hostile ones must draw."""
    report = open_page(write_report(clean_store))
    compared = open_page(compare_page(clean_store, tmp_path_factory.mktemp("cmp"), ""))
    assert chart_count(report) > 5 and chart_count(compared) > 0
    return chart_count(report), chart_count(compared)


def compare_page(root, out_dir, payload: str):
    side = select_run(load_sweeps(root), None)
    return write_page(cmp.compare(side, side.copy()), out_dir / "compare.html",
                      f"base{payload}", f"new{payload}")


@needs_chromium
def test_report_runs_no_payload_draws_every_chart_and_shows_it_as_text(hostile, clean_pages):
    payload, root = hostile
    dom = open_page(root / "report" / "report.html")
    assert_ran_no_payload(dom)
    assert 'data-kp-drawn="1"' in dom                    # interactive.js ran to its end
    assert chart_count(dom) == clean_pages[0]
    host = ResultStore(root).read(SWEEPS)["host"].iloc[0]
    assert f"<td>{dom_text(host)}</td>" in dom            # the runs table: the payload as text
    time_chart = dom.split('id="kp-time"')[1].split('id="kp-wins"')[0]
    assert dom_text(payload) in time_chart                 # and in a chart's legend


@needs_chromium
def test_compare_page_runs_no_payload_and_shows_it_as_text(hostile, clean_pages, tmp_path):
    payload, root = hostile
    dom = open_page(compare_page(root, tmp_path, payload))
    assert_ran_no_payload(dom)
    assert chart_count(dom) == clean_pages[1]
    assert f"<code>base{dom_text(payload)}</code>" in dom
    assert dom_text(payload) in dom.split("<pre>")[1]     # the points' labels


def unescaped(char: str, line: str) -> int:
    """How many times ``char`` occurs in ``line`` not escaped by a backslash."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*" + re.escape(char), line))


def test_report_md_holds_no_html_and_keeps_its_tables(hostile):
    payload, root = hostile
    md = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert not re.search(r"<[A-Za-z/!?]", md)                  # no tag, comment or autolink
    assert set(re.findall(r"&[A-Za-z0-9#]+;", md)) <= {"&lt;", "&amp;"}
    assert "\u2028" not in md and "\u2029" not in md
    lines = md.splitlines()
    header = None
    for before, line in zip([""] + lines, lines):   # every row of a table: as many cells as its header
        if line.startswith("| "):
            header = line if not before.startswith("| ") else header
            assert unescaped("|", line) == unescaped("|", header), line
    assert header is not None
    links = [line for line in lines if unescaped("[", line) or unescaped("`", line)]
    assert all(line.startswith("![") or line.startswith("Results: `") for line in links), links
    assert "### flow_1d" in md and "| kernel_product" in md    # '_' left as it is: readable


def test_a_figure_linked_outside_the_results_folder_is_not_embedded(clean_store, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(clean_store, root, ignore=shutil.ignore_patterns("report"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-7f3a: the ssh key")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "leak.png").write_bytes(b"OUTSIDE-PNG-91c2" + png_bytes("blue"))
    flow = ResultStore(root).figures_dir("flow")
    (flow / "plot.png").symlink_to(secret)
    (flow / "dir").symlink_to(outside, target_is_directory=True)
    (flow / "real.png").write_bytes(png_bytes())
    (flow / "inside.png").symlink_to(flow / "real.png")        # a link inside the folder: fine

    page = write_report(root, interactive=False).read_text(encoding="utf-8")
    md = (root / "report" / "report.md").read_text(encoding="utf-8")
    embedded = [base64.b64decode(src) for src in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert embedded.count(png_bytes()) == 2                   # real.png and inside.png
    for leaked in (secret.read_bytes(), (outside / "leak.png").read_bytes()):
        assert leaked not in embedded and base64.b64encode(leaked).decode() not in page
    assert "TOP-SECRET" not in page and "TOP-SECRET" not in md
    for text in (page, md):
        assert "flow/plot.png: a link to a file outside the results folder" in text
        assert "flow/dir: a link to a folder (not followed)" in text
    assert "(../figures/flow/plot.png)" not in md


def test_links_where_the_report_writes_are_replaced_not_written_through(clean_store, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(clean_store, root, ignore=shutil.ignore_patterns("report"))
    out = root / "report"
    out.mkdir()
    victims = {}
    for name in ("report.html", "report.md", "time_vs_n.png"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("keep me")
        (out / name).symlink_to(victims[name])
    write_report(root, interactive=False)
    for name, victim in victims.items():
        assert victim.read_text() == "keep me", name
        assert (out / name).is_file() and not (out / name).is_symlink(), name
    assert (out / "time_vs_n.png").read_bytes().startswith(b"\x89PNG")


def test_a_report_folder_that_is_a_link_is_refused_clearly(clean_store, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(clean_store, root, ignore=shutil.ignore_patterns("report"))
    (tmp_path / "elsewhere").mkdir()
    (root / "report").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert run_cli(report_cli, ["report", str(root)]) == 2
    err = capsys.readouterr().err
    assert "is a link" in err and "pass --out DIR" in err
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert run_cli(report_cli, ["report", str(root), "--out", str(tmp_path / "out")]) == 0


def test_script_json_writes_no_character_the_html_parser_acts_on():
    data = {"error": "</SCRIPT><!--<script>&\u2028\u2029]]>", "n": [1, 2.5, None]}
    import json

    from kpbench.results.escape import script_json

    text = script_json(data)
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == data
