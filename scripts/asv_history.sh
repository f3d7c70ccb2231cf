#!/usr/bin/env bash
# asv's history of the last N commits, published and looked at in a real browser:
#   1. a scratch clone of this checkout's HEAD (committed state; nothing here is touched),
#   2. `asv --config asv.virtualenv.conf.json run` on each of the last N commits (each built
#      and installed in asv's virtualenv; the fast subset -b '^bench_ci\.', --quick),
#   3. `asv publish`, served by `python -m http.server` on 127.0.0.1 (a free port; asv's page
#      loads its JSON over http, not file://),
#   4. headless Chromium at one benchmark's graph (index.html#bench_ci.<Class>.<method>, the
#      name taken from the published index.json), and these checks:
#        - asv saved a result for each of the N commits, the benchmark's graph data has N points
#        - the page loads: every request the browser made was answered 200/304, asv's title
#          shows the benchmark, no error dialog
#        - the graph is drawn: the DOM after load has flot's canvases in #main-graph, and the
#          screenshot's graph area is not blank (pixel variance, non-white share, via Pillow)
#        - no console message (Chromium's CONSOLE lines, errors and failed loads included)
#   Outputs in OUT: screenshot.png, summary.txt (the checks), dom.html, console.log,
#   http.log, asv_run.log, asv_publish.log.
#
#   scripts/asv_history.sh [N [OUT]]        # N default 3; OUT default $KPBENCH_ASV_HISTORY_OUT,
#                                           # else results/asv_history/ of this checkout
# Environment (optional): KPBENCH_BENCH_REGEX (default '^bench_ci\.'), KPBENCH_ASV_HISTORY_BENCH
# (the benchmark to open; default bench_ci.KernelProduct.time_kernel_product, else the first
# one published), KPBENCH_ASV_MACHINE (asv machine name, default kpbench-history; asv writes
# it to ~/.asv-machine.json), KPBENCH_TORCH_INDEX_URL (as in .ci/benchmarks),
# KPBENCH_ASV_WWW_CACHE (where the page's JavaScript packages are kept, see below),
# KPBENCH_ASV_HISTORY_KEEP=1 (keep the scratch folder).
#
# Exit 0: every check passed; 1: a check failed (summary.txt says which); 2: bad arguments;
# 77: a prerequisite is missing (chromium, npm with an empty cache, Pillow).
#
# Offline page. asv 0.6's index.html loads jQuery, flot, bootstrap, md5 and stupidtable from
# CDNs (code.jquery.com, cdnjs, jsdelivr). Nothing here reaches the internet: Chromium runs
# with --host-resolver-rules that resolve every host but 127.0.0.1 to nothing, and the
# published page gets those libraries from their npm packages (`npm pack`, the same versions;
# kept in KPBENCH_ASV_WWW_CACHE, default ~/.cache/kpbench/asv-www, fetched once), copied
# under html/vendor/ with index.html's URLs rewritten to them. npm has no stupidtable 1.0.1
# nor cdnjs's minified flot 0.8.3: stupid-table-plugin 1.1.3 and flot 0.8.3's own unminified
# files stand in, and an `integrity` attribute is kept only where the local file matches it
# (summary.txt lists which).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
N=${1:-3}
OUT=${2:-${KPBENCH_ASV_HISTORY_OUT:-$ROOT/results/asv_history}}
REGEX=${KPBENCH_BENCH_REGEX:-'^bench_ci\.'}
MACHINE=${KPBENCH_ASV_MACHINE:-kpbench-history}
WWW_CACHE=${KPBENCH_ASV_WWW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kpbench/asv-www}
NPM_PACKAGES=(jquery@3.3.1 bootstrap@3.1.1 flot@0.8.3 flot-orderbars@1.0.0 blueimp-md5@2.19.0
              stupid-table-plugin@1.1.3)
WINDOW=1400,900

skip() { echo "asv_history: SKIP: $*" >&2; exit 77; }
log() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }
case $N in ''|*[!0-9]*|0) echo "usage: $0 [N >= 1 [OUT]]" >&2; exit 2 ;; esac

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || skip "chromium not installed (scripts/install_test_tools.sh, or apt-get install chromium)"
"$PYTHON" -c 'import PIL' 2>/dev/null || skip "Pillow not importable by $PYTHON"
"$PYTHON" -c 'import asv' 2>/dev/null || skip "asv not importable by $PYTHON (pip install -e '.[test]')"

fetch_www_packages() {   # the npm tarballs of the page's libraries, into $WWW_CACHE (once)
    mkdir -p "$WWW_CACHE"
    local pkg tgz missing=()
    for pkg in "${NPM_PACKAGES[@]}"; do
        tgz="$WWW_CACHE/${pkg/@/-}.tgz"
        [ -s "$tgz" ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v npm >/dev/null || skip "npm not found and $WWW_CACHE lacks ${missing[*]}"
    echo "npm pack ${missing[*]} -> $WWW_CACHE"
    for pkg in "${missing[@]}"; do
        (cd "$WWW_CACHE" && timeout 300 npm pack --silent "$pkg" >/dev/null) \
            || skip "npm pack $pkg failed (no registry?), and $WWW_CACHE lacks it"
    done
}

WORK= HTTP_PID=
cleanup() {
    local rc=$?
    set +e
    [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null && wait "$HTTP_PID" 2>/dev/null
    if [ -n "$WORK" ]; then
        if [ "${KPBENCH_ASV_HISTORY_KEEP:-0}" = 1 ]; then echo "asv_history: kept $WORK" >&2
        else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}

fetch_www_packages
WORK=$(mktemp -d /tmp/kpb-asvhist.XXXXXX)
trap cleanup EXIT
mkdir -p "$OUT"
rm -f "$OUT"/{screenshot.png,summary.txt,dom.html,console.log,http.log,asv_run.log,asv_publish.log}

git clone -q "$ROOT" "$WORK/repo"
cd "$WORK/repo"
# asv publish graphs the commits of the branches in the config ("main"): here main is HEAD
git checkout -q -B main
git rev-list --max-count="$N" HEAD >"$WORK/hashes.txt"
have=$(wc -l <"$WORK/hashes.txt")
[ "$have" -ge 1 ] || { echo "no commits"; exit 1; }
if [ -n "${KPBENCH_TORCH_INDEX_URL:-}" ]; then
    export PIP_EXTRA_INDEX_URL="${KPBENCH_TORCH_INDEX_URL}${PIP_EXTRA_INDEX_URL:+ $PIP_EXTRA_INDEX_URL}"
fi
export KPBENCH_ASV_THREADS=${KPBENCH_ASV_THREADS:-1}
asv() { "$PYTHON" -m asv --config asv.virtualenv.conf.json "$@"; }

log "asv run on the last $have commit(s) of $(git rev-parse --short HEAD), -b '$REGEX' --quick"
git log --format='   %h %s' --max-count="$N" | cut -c1-100
asv machine --yes --machine "$MACHINE" >/dev/null
started=$SECONDS
run_rc=0
asv run --machine "$MACHINE" --bench "$REGEX" --quick --launch-method spawn --show-stderr \
    "HASHFILE:$WORK/hashes.txt" >"$OUT/asv_run.log" 2>&1 || run_rc=$?
run_s=$((SECONDS - started))
echo "asv run: exit $run_rc in $run_s s"
[ "$run_rc" = 0 ] || tail -30 "$OUT/asv_run.log"

log "asv publish"
asv publish >"$OUT/asv_publish.log" 2>&1 || { tail -30 "$OUT/asv_publish.log"; echo "asv publish failed"; exit 1; }
HTML="$WORK/repo/.asv/html"

# The page offline (see the top), the benchmark to open, and its graph data
"$PYTHON" - "$HTML" "$WWW_CACHE" "$WORK" "$MACHINE" "$have" "${KPBENCH_ASV_HISTORY_BENCH:-}" <<'EOF'
import base64, hashlib, json, pathlib, re, sys, tarfile
html, cache, work = map(pathlib.Path, sys.argv[1:4])
machine, n_commits, wanted = sys.argv[4], int(sys.argv[5]), sys.argv[6]
# CDN URL of asv 0.6's index.html -> (npm package, file in it)
CDN = {
    "https://code.jquery.com/jquery-3.3.1.min.js": ("jquery@3.3.1", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": ("flot@0.8.3", "jquery.flot.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": ("flot@0.8.3", "jquery.flot.time.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": ("flot@0.8.3", "jquery.flot.selection.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": ("flot@0.8.3", "jquery.flot.categories.js"),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": ("flot-orderbars@1.0.0", "js/jquery.flot.orderBars.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": ("stupid-table-plugin@1.1.3", "stupidtable.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": ("blueimp-md5@2.19.0", "js/md5.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": ("bootstrap@3.1.1", "dist/js/bootstrap.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": ("bootstrap@3.1.1", "dist/css/bootstrap.min.css"),
}
index_html = html / "index.html"
page = index_html.read_text()
notes = []
for pkg in sorted({p for p, _ in CDN.values()}):
    with tarfile.open(cache / (pkg.replace("@", "-") + ".tgz")) as tar:   # npm: package/...
        try:
            tar.extractall(html / "vendor" / pkg, filter="data")
        except TypeError:   # Python without extraction filters
            tar.extractall(html / "vendor" / pkg)

def local(match):
    tag = match.group(0)
    url = re.search(r'(?:src|href)="(https?://[^"]+)"', tag).group(1)
    if url not in CDN:
        sys.exit(f"asv's index.html loads {url}: not mapped to a local copy (asv changed?)")
    pkg, path = CDN[url]
    rel = f"vendor/{pkg}/package/{path}"
    data = (html / rel).read_bytes()
    tag = tag.replace(url, rel)
    sri = re.search(r'integrity="(sha\d+)-([^"]+)"', tag)
    if sri:
        digest = base64.b64encode(hashlib.new(sri.group(1), data).digest()).decode()
        if digest == sri.group(2):
            notes.append(f"{pkg}/{path}: integrity kept (same file as the CDN's)")
        else:
            tag = tag.replace(sri.group(0), "")
            notes.append(f"{pkg}/{path}: integrity dropped (another build than the CDN's)")
    return tag

page = re.sub(r'<(?:script|link)\b[^>]*(?:src|href)="https?://[^"]+"[^>]*>', local, page)
index_html.write_text(page)

index = json.loads((html / "index.json").read_text())
names = sorted(index["benchmarks"])
bench = wanted or ("bench_ci.KernelProduct.time_kernel_product"
                   if "bench_ci.KernelProduct.time_kernel_product" in names else names[0])
if bench not in names:
    sys.exit(f"benchmark {bench} not published; published: {names}")
graphs = [p for p in (html / "graphs").rglob(f"{bench}.json") if f"machine-{machine}" in str(p)]
points = 0   # revisions with a value, in the fullest graph file of this machine
for g in graphs:   # [[revision, value or [values per parameter set]], ...]
    revisions = {revision for revision, value in json.loads(g.read_text())
                 if any(v is not None for v in (value if isinstance(value, list) else [value]))}
    points = max(points, len(revisions))
results = [p for p in (html.parent / "results" / machine).glob("*.json") if p.name != "machine.json"]
(work / "page.json").write_text(json.dumps({
    "benchmark": bench, "benchmarks": names, "graph_files": len(graphs), "graph_points": points,
    "result_files": len(results), "www_notes": notes}))
print(f"benchmark {bench}: graph data {points} point(s) in {len(graphs)} file(s); "
      f"{len(results)} result file(s) for {n_commits} commit(s)")
EOF

log "python -m http.server on 127.0.0.1 (port 0: the system picks a free one)"
"$PYTHON" -u -m http.server 0 --bind 127.0.0.1 --directory "$HTML" >"$WORK/http.out" 2>"$OUT/http.log" &
HTTP_PID=$!
PORT=
for _ in $(seq 100); do
    PORT=$(sed -n 's/.* port \([0-9]\+\) .*/\1/p' "$WORK/http.out" | head -1)
    [ -n "$PORT" ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { cat "$WORK/http.out" "$OUT/http.log"; echo "http.server did not start"; exit 1; }
BENCH=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["benchmark"])' "$WORK/page.json")
URL="http://127.0.0.1:$PORT/index.html#$BENCH"
echo "$URL"

browse() {   # chromium, headless, loopback only, its own profile; extra args
    timeout 180 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$WORK/chromium-profile" --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --disable-extensions \
        --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
        --enable-logging=stderr --v=0 --virtual-time-budget=20000 --window-size="$WINDOW" \
        "$@" "$URL"
}
log "headless Chromium: --dump-dom and --screenshot"
dom_rc=0 shot_rc=0
browse --dump-dom >"$OUT/dom.html" 2>"$OUT/console.log" || dom_rc=$?
browse --screenshot="$OUT/screenshot.png" >/dev/null 2>>"$OUT/console.log" || shot_rc=$?
kill "$HTTP_PID" 2>/dev/null; wait "$HTTP_PID" 2>/dev/null || true; HTTP_PID=

"$PYTHON" - "$OUT" "$WORK/page.json" "$URL" "$have" "$run_rc" "$run_s" "$dom_rc" "$shot_rc" \
    "$WORK/hashes.txt" "$WINDOW" <<'EOF'
import json, pathlib, re, subprocess, sys
from PIL import Image, ImageStat
out, page_json = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
url, n = sys.argv[3], int(sys.argv[4])
run_rc, run_s, dom_rc, shot_rc = map(int, sys.argv[5:9])
hashes = pathlib.Path(sys.argv[9]).read_text().split()
width, height = map(int, sys.argv[10].split(","))
page = json.loads(page_json.read_text())
bench = page["benchmark"]
dom = (out / "dom.html").read_text(errors="replace")
console = [l for l in (out / "console.log").read_text(errors="replace").splitlines() if ":CONSOLE" in l]
requests = [(m, p.split("?")[0], c) for m, p, c in   # paths without asv's ?timestamp=...
            re.findall(r'"(GET|HEAD|POST) (\S+) HTTP/[\d.]+" (\d{3})', (out / "http.log").read_text())]
failed = [f"{m} {p} -> {c}" for m, p, c in requests if int(c) >= 400]
checks = []
def check(name, ok, detail):
    checks.append((name, bool(ok), detail))

check("asv run exited 0", run_rc == 0, f"exit {run_rc} in {run_s} s (asv_run.log)")
check(f"asv saved a result for each of the {n} commits", page["result_files"] == n,
      f"{page['result_files']} result file(s)")
check(f"{bench}: graph data has {n} points", page["graph_points"] == n,
      f"{page['graph_points']} point(s) in {page['graph_files']} graph file(s)")
check("chromium --dump-dom and --screenshot exited 0", dom_rc == 0 and shot_rc == 0,
      f"exits {dom_rc}, {shot_rc}")
got_index = any(p.startswith("/index.html") and c in ("200", "304") for _, p, c in requests)
got_graph = any(p.startswith("/graphs/") and p.endswith(f"/{bench}.json") and c in ("200", "304")
                for _, p, c in requests)
check("the page loads: index.html and the graph's JSON served, no request failed",
      got_index and got_graph and not failed,
      f"{len(requests)} request(s), failed: {failed or 'none'}")
title = re.search(r'<span[^>]*id="title"[^>]*>(.*?)</span>', dom, re.S)
title_text = re.sub(r"<[^>]+>", "", title.group(1)).strip() if title else ""
error_shown = re.search(r'id="error"[^>]*class="[^"]*\bin\b', dom) or \
    re.search(r'class="[^"]*\bmodal\b[^"]*\bin\b[^"]*"[^>]*id="error"', dom)
check("asv shows the benchmark's graph page (title), no error dialog",
      bench.split(".")[-1] in title_text and not error_shown,
      f"title {title_text[:80]!r}, error dialog {'shown' if error_shown else 'not shown'}")
graph = re.search(r'<div id="main-graph".*?(?=<div id="overview")', dom, re.S)
graph_html = graph.group(0) if graph else ""
canvases = re.findall(r'<canvas class="(flot-\w+)"', graph_html)
check("the graph is drawn: flot's canvases in #main-graph",
      "flot-base" in canvases and "No graphs to load" not in graph_html,
      f"canvases {canvases}")
shot = out / "screenshot.png"
if shot.is_file():
    image = Image.open(shot).convert("RGB")
    area = image.crop((220, 120, image.width - 20, image.height - 200))   # right of asv's menu
    stat = ImageStat.Stat(area.convert("L"))
    colors = area.getcolors(maxcolors=1 << 22) or []
    non_white = sum(c for c, rgb in colors if min(rgb) < 235) / (area.width * area.height)
    ok = image.size == (width, height) and stat.stddev[0] > 8 and non_white > 0.005 and len(colors) > 30
    detail = (f"{image.size[0]}x{image.size[1]}, graph area: stddev {stat.stddev[0]:.1f}, "
              f"non-white {100 * non_white:.2f}%, {len(colors)} colours, {shot.stat().st_size} bytes")
else:
    ok, detail = False, "no screenshot"
check("the screenshot is not blank", ok, detail)
check("no console message", not console, f"{len(console)} CONSOLE line(s)" +
      ("".join(f"\n      {l[:300]}" for l in console[:10])))
passed = all(ok for _, ok, _ in checks)
lines = [f"asv history of {n} commit(s), {bench}", f"url: {url}", "commits (newest first):"]
log = subprocess.run(["git", "log", "--no-walk=unsorted", "--format=  %h %s", *hashes],
                     capture_output=True, text=True).stdout.rstrip()
lines += [log, "checks:"]
lines += [f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}" for name, ok, detail in checks]
lines += ["page libraries (npm, offline):"] + [f"  {note}" for note in page["www_notes"]]
lines += [f"verdict: {'all checks passed' if passed else 'FAILED'}"]
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if passed else 1)
EOF
