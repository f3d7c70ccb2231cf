"""Open a report.html in headless Chromium: its size, the time to load and draw, whether
every chart drew, console messages (the check of issue 28 on a 1e6-row report).

    python scripts/report_browser_check.py RESULTS/report/report.html
Exit status 0 when the page drew every chart and logged nothing, 1 otherwise.
"""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import time

CHARTS = ("time", "wins", "pareto", "memory", "status")


def check(page: pathlib.Path) -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium on PATH", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=60000", "--window-size=1400,3200", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    dom = result.stdout
    drawn = [c for c in CHARTS if (m := re.search(f'<div id="kp-{c}"[^>]*>(.*?)</div></div>', dom, re.S))
             and "main-svg" in m.group(1)]
    finished = 'data-kp-drawn="1"' in dom
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    print(f"{page}: {page.stat().st_size / 1e6:.1f} MB, chromium rc={result.returncode} in {seconds:.1f} s "
          f"(wall, load + draw + dump), finished drawing: {finished}, "
          f"charts drawn {len(drawn)}/{len(CHARTS)} ({', '.join(drawn)}), console lines {len(console)}")
    for line in console[:5]:
        print("  " + line[:300])
    return 0 if result.returncode == 0 and finished and len(drawn) == len(CHARTS) and not console else 1


if __name__ == "__main__":
    sys.exit(check(pathlib.Path(sys.argv[1])))
