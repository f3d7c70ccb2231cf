"""The report, from a real Parquet store with mixed statuses (written through ResultStore)."""
from __future__ import annotations

import argparse
import base64
import html.parser
import io

import pytest
from PIL import Image

from kpbench.results import format as fmt
from kpbench.results import report, tables
from kpbench.results.meta import run_metadata
from kpbench.results.schema import POINT_COLUMNS
from kpbench.results.store import ResultStore
from kpbench.cli import report as report_cli
from kpbench.results.selection import load_sweeps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(module, argv: list[str]) -> int:
    """Run one ``kpbench`` sub-command through its own argparse parser, under the CLI's
    error policy, as the CLI does."""
    from kpbench.cli.main import run_command

    parser = argparse.ArgumentParser(prog="kpbench")
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


def sweep_row(op="kernel_product", backend="torch", N=1000, status="ok", time=None, mem=None,
              err=None, dtype="float32", blur=0.1, **overrides) -> dict:
    """One sweeps row following kpbench.results.schema (the point, status, measurements)."""
    row = dict(op=op, backend=backend, kernel="gaussian", N=N, M=N, D=3, blur=blur, p=None,
               reach=None, dtype=dtype, device="cpu", seed=0, iters=None, scaling=None,
               tol=None, data=None)
    row.update(overrides)
    row["key"] = "|".join(f"{c}={row.get(c)}" for c in POINT_COLUMNS)
    row.update(status=status, time_median_s=time, time_min_s=time, repeats=3 if time else None,
               peak_mem_bytes=None if mem is None else round(mem), rel_err=err,
               error=None if status == "ok" else f"{status} at N={N}")
    return row


def write_sweeps(root, rows, run_id="run-a", **meta) -> ResultStore:
    store = ResultStore(root)
    store.append("sweeps", [{**row, **run_metadata(run_id=run_id, sweep="speed", executor="inline"), **meta}
                            for row in rows])
    return store


def mixed_rows() -> list[dict]:
    """kernel_product: keops fastest at 1e3 and 1e5, torch at 1e4; torch refused (skipped)
    at 1e5, numpy timeout at 1e5. softmin: torch only, oom at 1e5. sinkhorn: nothing ok."""
    kp = [
        sweep_row(backend="numpy", N=1000, time=0.020, mem=1e6, err=0.0, dtype="float64"),
        sweep_row(backend="numpy", N=10000, time=2.0, mem=2e6, err=0.0, dtype="float64"),
        sweep_row(backend="numpy", N=100000, status="timeout", dtype="float64"),
        sweep_row(backend="torch", N=1000, time=0.002, mem=4e6, err=2e-7),
        sweep_row(backend="torch", N=10000, time=0.100, mem=4e8, err=3e-7),
        sweep_row(backend="torch", N=100000, status="skipped"),   # refused by the pre-flight
        sweep_row(backend="keops", N=1000, time=0.001, mem=1e6, err=1e-7),
        sweep_row(backend="keops", N=10000, time=0.200, mem=2e6, err=2e-7),
        sweep_row(backend="keops", N=100000, time=15.0, mem=3e6, err=4e-7),
    ]
    softmin = [sweep_row(op="softmin", backend="torch", N=n, time=t, mem=m, err=1e-6, p=2, kernel="softmin")
               for n, t, m in [(1000, 0.003, 5e6), (10000, 0.3, 5e8)]]
    softmin.append(sweep_row(op="softmin", backend="torch", N=100000, status="oom", p=2, kernel="softmin"))
    sinkhorn = [
        sweep_row(op="sinkhorn", backend="torch", N=1000, status="error", p=2, kernel="sinkhorn"),
        sweep_row(op="sinkhorn", backend="keops", N=1000, status="unsupported", p=2, kernel="sinkhorn"),
        sweep_row(op="sinkhorn", backend="numpy", N=1000, status="skipped", p=2, kernel="sinkhorn",
                  dtype="float64"),
    ]
    return kp + softmin + sinkhorn


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.headings, self._in_heading = [], 0, [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "table":
            self.tables += 1
        self._in_heading = tag in ("h1", "h2", "h3")

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


@pytest.fixture
def mixed_store(tmp_path):
    write_sweeps(tmp_path / "results", mixed_rows())
    return tmp_path / "results"


def test_crossover_map_names_the_lead_changes(mixed_store):
    lines = tables.crossover_lines(load_sweeps(mixed_store))
    kp32 = [line for line in lines if line.startswith("kernel_product") and "float32" in line]
    # at 1e5 torch was refused: keops is not "fastest" there, only timed
    assert kp32 == ["kernel_product gaussian D=3 blur=0.1 float32 cpu: "
                    "keops fastest at N<=1e3, torch from 1e4; only keops was timed at N=1e5"]
    # the numpy reference is float64: alone in its configuration, it wins nothing
    assert ("kernel_product gaussian D=3 blur=0.1 float64 cpu: only numpy was timed (no comparison)"
            in lines)
    # the kernel column of a softmin row only repeats the op: left out of the label
    assert "softmin D=3 blur=0.1 p=2 float32 cpu: only torch was timed (no comparison)" in lines
    assert any(line.startswith("sinkhorn") and "no backend completed" in line for line in lines)


def test_crossover_without_speed_rows_says_so(tmp_path):
    write_sweeps(tmp_path, [sweep_row(backend="torch", mem=1e6), sweep_row(backend="keops", err=1e-7)])
    assert tables.crossover_lines(load_sweeps(tmp_path)) == [
        "kernel_product gaussian D=3 blur=0.1 float32 cpu: no timings (only memory/accuracy rows)"]


def test_unsupported_only_combinations_stay_out_of_the_frontier_and_tables(tmp_path):
    write_sweeps(tmp_path, [sweep_row(backend="numpy", status="unsupported"),
                            sweep_row(backend="torch", time=0.1)])
    frame = load_sweeps(tmp_path)
    assert [r[1] for r in tables.oom_frontier(frame)] == ["torch"]
    [(_, _, rows)] = tables.op_tables(frame, "kernel_product")
    assert [r[:3] for r in rows[:2]] == [["numpy float32 cpu", "status", "unsupported"],
                                         ["torch float32 cpu", "median time", "100 ms"]]


def test_oom_frontier_gives_largest_ok_and_first_failure(mixed_store):
    rows = tables.oom_frontier(load_sweeps(mixed_store))
    by_backend = {(r[0], r[1]): r for r in rows}
    assert by_backend[("kernel_product", "torch")][4:] == ["1e4", "1e5", "-"]
    assert by_backend[("kernel_product", "numpy")][4:] == ["1e4", "-", "1e5"]
    assert by_backend[("softmin", "torch")][4:] == ["1e4", "1e5", "-"]
    assert by_backend[("kernel_product", "keops")][4:] == ["1e5", "-", "-"]


def test_backend_by_n_table_with_speedups_in_the_same_dtype_only(mixed_store):
    frame = load_sweeps(mixed_store)
    [(title, header, rows)] = tables.op_tables(frame, "kernel_product")
    assert title == "gaussian D=3 blur=0.1"
    assert header == ["backend", "metric", "N=1e3", "N=1e4", "N=1e5"]
    names = [r[0] for r in rows if r[0]]
    assert names == ["numpy float64 cpu", "torch float32 cpu", "keops float32 cpu"]
    # numpy (float64) has no float64 torch row to be compared with: no speed-up row at all
    assert [r[1] for r in rows[:3]] == ["median time", "peak memory", "max rel. error"]
    assert rows[0][2:] == ["20 ms", "2 s", "timeout"]
    torch_time, torch_mem, torch_err = rows[3:6]   # the baseline: no speed-up over itself
    assert torch_time[1:] == ["median time", "2 ms", "100 ms", "skipped"]
    assert torch_mem[1:4] == ["peak memory", "3.8 MiB", "381.5 MiB"]
    assert torch_err[1:4] == ["max rel. error", "2.0e-07", "3.0e-07"]
    keops_speedup = rows[7]
    assert keops_speedup[1:] == ["speed-up vs torch", "2x", "0.5x", ""]   # 2 ms / 1 ms, 100 / 200 ms


def test_baseline_is_selectable(mixed_store):
    [(_, _, rows)] = tables.op_tables(load_sweeps(mixed_store), "kernel_product", baseline="keops")
    speedups = [r[2:] for r in rows if r[1] == "speed-up vs keops"]
    assert speedups == [["0.5x", "2x", ""]]   # torch's; keops is the baseline


def test_tables_leave_out_metrics_a_configuration_has_nothing_for(tmp_path):
    write_sweeps(tmp_path, [sweep_row(backend="torch", err=1e-7), sweep_row(backend="keops", err=2e-7)])
    [(_, _, rows)] = tables.op_tables(load_sweeps(tmp_path), "kernel_product")
    assert [r[1] for r in rows] == ["max rel. error", "max rel. error"]


def test_report_files_html_images_and_markdown(mixed_store, tmp_path):
    fig_dir = mixed_store / "figures" / "flow_2d"
    fig_dir.mkdir(parents=True)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    (fig_dir / "snapshot.png").write_bytes(png.getvalue())

    html_path = report.write_report(mixed_store)
    out = mixed_store / "report"
    assert html_path == out / "report.html"
    for name in ("time_vs_n.png", "memory_vs_n.png", "error_vs_dtype.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
    assert not (out / "error_vs_blur.png").exists()   # one blur only: nothing to plot against

    parser = _Collector()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert len(parser.images) == 5  # three plots, the side-by-side chart, the reproduction figure
    assert (out / "side_by_side_0.png").read_bytes().startswith(PNG_MAGIC)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        Image.open(io.BytesIO(raw)).verify()  # a complete, valid PNG
    assert {"Crossover map", "OOM frontier", "Reproductions", "kernel_product"} <= set(parser.headings)
    assert parser.tables >= 4

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Crossover map" in md and "## OOM frontier" in md
    assert "keops fastest at N<=1e3, torch from 1e4" in md
    assert "| kernel_product | torch | cpu | float32 | 1e4 | 1e5 | - |" in md
    assert "![figures/flow_2d/snapshot.png](../figures/flow_2d/snapshot.png)" in md
    assert "![Median time vs N (log-log), one panel per op](time_vs_n.png)" in md


def test_error_vs_blur_plot_needs_two_blurs(tmp_path):
    write_sweeps(tmp_path / "results", [sweep_row(backend="torch", err=1e-7, blur=b) for b in (0.1, 0.5)])
    report.write_report(tmp_path / "results")
    assert (tmp_path / "results" / "report" / "error_vs_blur.png").read_bytes().startswith(PNG_MAGIC)


def test_reproduction_tables_are_summarised(tmp_path):
    root = tmp_path / "results"
    ResultStore(root).append("flow_1d", [
        {"loss": loss, "backend": "torch", "N": 100, "D": 1, "status": "ok", "step": s,
         "nan": False, "loss_value": scale / (s + 1), "w2": 0.1 * scale}
        for loss, scale in (("energy", 1.0), ("sinkhorn", 2.0)) for s in range(5)])
    md = (report.write_report(root).parent / "report.md").read_text()
    assert "No sweep results found" in md
    assert "### flow_1d" in md
    assert "in every row: backend=torch, N=100, D=1, nan=False." in md
    assert "| loss | rows | last step | status | loss_value | w2 |" in md
    assert "| sinkhorn | 5 | 4 | ok | 0.4 | 0.2 |" in md


def test_partial_results_single_backend_only_failures(tmp_path):
    root = tmp_path / "results"
    write_sweeps(root, [sweep_row(backend="torch", N=1000, status="oom"),
                        sweep_row(backend="torch", N=2000, status="error")])
    md = (report.write_report(root, tmp_path / "out").parent / "report.md").read_text()
    assert "no backend completed any N (torch tried)" in md
    assert "No ok points to plot." in md


def test_empty_store_gives_a_clear_message(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert run_cli(report_cli, ["report", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "no sweep rows" in out
    assert "No sweep results found" in (tmp_path / "results" / "report" / "report.md").read_text()


def test_missing_results_dir_is_an_error_not_a_traceback(tmp_path, capsys):
    assert run_cli(report_cli, ["report", str(tmp_path / "nowhere")]) == 2
    assert "no results directory" in capsys.readouterr().err


def test_report_cli_writes_to_out(mixed_store, tmp_path, capsys):
    assert run_cli(report_cli, ["report", str(mixed_store), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()
    assert str(tmp_path / "rep" / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize("n, text", [(200, "200"), (1000, "1e3"), (4000, "4e3"),
                                     (100000, "1e5"), (1500, "1500")])
def test_fmt_n(n, text):
    assert fmt.fmt_n(n) == text


def test_interactive_page_inlines_plotly_and_the_data(mixed_store):
    from kpbench.results import interactive
    from kpbench.results.selection import sweep_frame

    page = report.write_report(mixed_store).read_text(encoding="utf-8")
    assert "plotly.js v" in page and "window.KPBENCH = " in page
    assert "<script src" not in page          # nothing fetched: works offline
    assert "(interactive charts: open report.html)" in (mixed_store / "report" / "report.md").read_text()
    payload = interactive.payload_of(sweep_frame(mixed_store))
    wins = {(w["N"], w["dtype"]): w for w in payload["wins"] if w["op"] == "kernel_product"}
    assert (wins[1000, "float32"]["winner"], wins[1000, "float32"]["runner_up"]) == ("keops", "torch")
    assert wins[1000, "float32"]["margin"] == pytest.approx(2.0)
    assert wins[100000, "float32"]["runner_up"] is None      # torch refused: keops alone
    [torch_1e3] = [r for r in payload["rows"] if r["op"] == "kernel_product"
                   and r["backend"] == "torch" and r["N"] == 1000]
    assert "median 2 ms" in torch_1e3["hover"] and "host " in torch_1e3["hover"]
    assert {r["status"] for r in payload["rows"] if r["error"]} == {"timeout", "skipped", "oom", "error",
                                                                   "unsupported"}


def test_time_tables_show_the_iqr_and_the_first_call(tmp_path):
    write_sweeps(tmp_path, [sweep_row(backend="torch", time=2e-3, time_iqr_s=1e-4, first_call_s=0.5)])
    [(_, _, rows)] = tables.op_tables(load_sweeps(tmp_path), "kernel_product")
    assert [r[1:] for r in rows] == [["median time", "2 ms"], ["IQR", "100 µs"], ["first call", "500 ms"]]


def test_sinkhorn_tables_say_how_many_iterations_ran_and_when_a_cap_stopped_them(tmp_path):
    sink = dict(op="sinkhorn", kernel="sinkhorn", p=2, scaling=0.5, err=1e-8)
    write_sweeps(tmp_path, [
        sweep_row(**sink, N=100, tol=1e-6, iterations=385, converged=True),
        sweep_row(**sink, N=100, tol=1e-6, iterations=392, converged=True, seed=1),
        sweep_row(**sink, N=200, tol=1e-6, iterations=1000, converged=False),
        sweep_row(**sink, N=100, iterations=7),
        sweep_row(backend="keops", err=2e-7)])
    frame = load_sweeps(tmp_path)
    by_title = {title: rows for title, _, rows in tables.op_tables(frame, "sinkhorn")}
    assert by_title["D=3 blur=0.1 p=2 scaling=0.5 tol=1e-06"] == [
        ["torch float32 cpu", "max rel. error", "1.0e-08", "1.0e-08"],
        ["", "iterations", "385-392", "1000, not converged"]]
    assert by_title["D=3 blur=0.1 p=2 scaling=0.5"][1][1:] == ["iterations", "7"]
    [(_, _, kp_rows)] = tables.op_tables(frame, "kernel_product")
    assert [r[1] for r in kp_rows] == ["max rel. error"]     # no iterations where none ran


def test_report_cli_baseline_option(mixed_store, tmp_path):
    assert run_cli(report_cli, ["report", str(mixed_store), "--out", str(tmp_path / "r"), "--baseline", "keops"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "speed-up vs keops" in md and "speed-up vs torch" not in md


def test_who_wins_where_compares_across_dtype_when_one_backend_per_dtype_was_timed(tmp_path):
    """numpy timed in float64 only, torch in float32 only (a `--backends numpy,torch` sweep):
    each dtype alone compares nothing (single cells, folded), but across dtypes torch wins
    by 5x, and the record says which dtype each ran in; where a dtype had two backends
    timed, no cross-dtype record is made."""
    from kpbench.results import interactive
    from kpbench.results.selection import sweep_frame

    write_sweeps(tmp_path, [
        sweep_row(backend="numpy", N=1000, time=0.010, dtype="float64"),
        sweep_row(backend="torch", N=1000, time=0.002, dtype="float32"),
        sweep_row(backend="numpy", N=100, time=0.001, dtype="float64", blur=0.5),
        sweep_row(backend="torch", N=100, time=0.002, dtype="float64", blur=0.5),
        sweep_row(backend="torch", N=100, time=0.001, dtype="float32", blur=0.5)])
    wins = interactive.payload_of(sweep_frame(tmp_path))["wins"]
    [across] = [w for w in wins if w["dtype"] is None]
    assert (across["winner"], across["runner_up"], across["dtypes"]) == ("torch", "numpy",
                                                                         ["float32", "float64"])
    assert across["margin"] == pytest.approx(5.0) and across["blur"] == 0.1
    singles = [w for w in wins if w["single"]]
    assert {(w["winner"], w["folded"]) for w in singles} == {
        ("numpy", True), ("torch", True), ("torch", False)}    # blur .5 float32: not folded
    assert ["dtype", "float64"] in next(w for w in wins if w["dtype"] == "float64")["parts"]
