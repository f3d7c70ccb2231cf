"""The results layer at scale: report and compare of a synthetic store of 1e5 rows.

``setup_cache`` makes the store once per asv run (``scripts/make_store.py``: the real
schema, rows marked synthetic, 167 runs of 600 rows in parts of 8) and compacts it (one
part per run, as ``kpbench store compact`` leaves it). Then:

* ``Report.time_report``: ``write_report`` (Markdown, PNGs, the self-contained HTML page);
  ``Report.track_report_bytes``: the size of report.html (bounded by the configurations);
* ``Compare.time_compare``: the store against itself, every run (latest row per key);
* ``Compare.time_resume_keys``: the keys a resumed sweep skips.
"""
import importlib.util
import pathlib
import shutil
import tempfile

ROWS = 100_000
_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _make_store(out: pathlib.Path) -> None:
    spec = importlib.util.spec_from_file_location("make_store", _ROOT / "scripts" / "make_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_store(out, ROWS)


class _Store:
    timeout = 600
    number = 1
    repeat = (1, 3, 120.0)
    rounds = 1
    warmup_time = 0

    def setup_cache(self):
        from kpbench.results.compact import compact
        from kpbench.results.store import ResultStore

        out = pathlib.Path("store").resolve()     # asv runs setup_cache in a folder it removes
        _make_store(out)
        compact(ResultStore(out))
        return str(out)


class Report(_Store):
    def setup(self, store):
        self.out = pathlib.Path(tempfile.mkdtemp(prefix="kpbench-asv-report-"))

    def teardown(self, store):
        shutil.rmtree(self.out, ignore_errors=True)

    def time_report(self, store):
        from kpbench.results.report import write_report

        write_report(store, self.out)

    def track_report_bytes(self, store):
        from kpbench.results.report import write_report

        return write_report(store, self.out).stat().st_size

    track_report_bytes.unit = "bytes"


class Compare(_Store):
    def time_compare(self, store):
        from kpbench.results import compare
        from kpbench.results.selection import load_run

        compare.compare(load_run(store, None), load_run(store, None), allow_env_mismatch=True)

    def time_resume_keys(self, store):
        from kpbench.results.store import SWEEPS, ResultStore

        ResultStore(store).keys(SWEEPS)
