#!/usr/bin/env bash
# The `ray submit` path end to end, on this machine, over real SSH:
#   sshd on loopback -> ray up (local provider: head 127.0.0.1, worker 127.0.0.2)
#   -> ray submit cluster.yaml scripts/ray_sweep.py -- <a small sweep>
#   -> ray rsync-down the Parquet -> kpbench report -> ray down
# and cleans up after itself (sshd, every Ray process, the throwaway key, the folder).
#
#   scripts/cluster_smoke.sh [--install]     # --install: apt-get install openssh-server rsync if missing
#
# Exit 0: all steps passed; 77: a prerequisite is missing (openssh-server, rsync, port 22
# on 127.0.0.1/127.0.0.2 taken, not root); anything else: the step that failed says so.
#
# How it stays on loopback and harmless to the machine:
# * sshd listens on 127.0.0.1:22 and 127.0.0.2:22 only (Ray's launcher has no SSH port
#   setting), with a host key and one authorized key made here, root by key only.
# * sshd runs in its own PID namespace (unshare --pid --mount-proc): every process the
#   launcher starts over SSH lives there, so the `ray stop` that `ray down` runs (it kills
#   every Ray process it can see) sees only this cluster's, and killing the namespace at
#   the end leaves nothing behind.
# * The SSH sessions get HOME=<work>/home: Ray's bootstrap files land there, not in ~root.
# * The "nodes" install nothing (no internet, and never into the machine's Python): the
#   smoke's own setup_commands check that kpbench, torch and ray import from the checkout
#   that `file_mounts` copied (PYTHONPATH); the example cluster.yaml keeps pip installs.
# * Ray node addresses are 127.0.0.3 (head) and 127.0.0.2 (worker): Ray rewrites
#   --node-ip-address=127.0.0.1 into the machine's routable address.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
PYBIN=$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")
RAY="$PYBIN/ray"
HEAD_SSH=127.0.0.1 WORKER_SSH=127.0.0.2 HEAD_RAY=127.0.0.3
SWEEP=(speed --ops kernel_product,sinkhorn --backends numpy,torch --N 100,200 --iters 10 --repeats 3 --warmup 1)

log() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }
skip() { echo "cluster_smoke: SKIP: $*" >&2; exit 77; }

prerequisites() {
    local missing=()
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v unshare >/dev/null || skip "unshare (util-linux) not found"
    [ "$(id -u)" = 0 ] || skip "needs root (sshd, PID namespace)"
    if [ ${#missing[@]} -gt 0 ]; then
        [ "${1:-}" = --install ] || skip "not installed: ${missing[*]} (apt-get install ${missing[*]}, or pass --install)"
        command -v apt-get >/dev/null || skip "not installed and no apt-get: ${missing[*]}"
        log "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                 --no-install-recommends "${missing[@]}" >/dev/null; } || skip "apt-get install ${missing[*]} failed"
    fi
    for ip in "$HEAD_SSH" "$WORKER_SSH"; do
        if (exec 3<>"/dev/tcp/$ip/22") 2>/dev/null; then skip "port 22 on $ip is already taken"; fi
    done
}

WORK= NS_PID=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$NS_PID" ] && kill -0 "$NS_PID" 2>/dev/null; then
        [ -f "$WORK/cluster.yaml" ] && [ -z "${DOWN_DONE:-}" ] && \
            timeout 120 "$RAY" down -y "$WORK/cluster.yaml" >"$WORK/ray_down_cleanup.log" 2>&1
        # setsid made $NS_PID a process group: unshare and the namespace's init (whose
        # death ends every process of the namespace)
        kill -KILL -- "-$NS_PID" 2>/dev/null; wait "$NS_PID" 2>/dev/null
    fi
    local control
    control=$(grep -o 'ControlPath=/tmp/ray_ssh_[0-9a-f]*/[0-9a-f]*' "$WORK/ray_up.log" 2>/dev/null | head -1)
    if [ -n "$control" ]; then   # Ray's SSH control sockets of this cluster
        rm -rf "${control#ControlPath=}"; rmdir "$(dirname "${control#ControlPath=}")" 2>/dev/null
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}

start_sshd() {
    mkdir -p "$WORK/home/.ssh" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519" -C kpbench-smoke
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_ed25519"
    cp "$WORK/id_ed25519.pub" "$WORK/authorized_keys"
    # the remote shells: this Python first, the checkout that file_mounts copies importable
    cat >"$WORK/home/.profile" <<EOF
export PATH="$PYBIN:\$PATH" PYTHONPATH="$WORK/home/kpbench" RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
EOF
    cp "$WORK/home/.profile" "$WORK/home/.bashrc"
    cat >"$WORK/sshd_config" <<EOF
ListenAddress $HEAD_SSH:22
ListenAddress $WORKER_SSH:22
HostKey $WORK/host_ed25519
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $WORK/sshd.pid
SetEnv HOME=$WORK/home
MaxStartups 50
MaxSessions 50
EOF
    # PID 1 of the namespace is a shell that reaps orphans; sshd runs under it
    setsid unshare --pid --fork --mount-proc bash -c \
        "/usr/sbin/sshd -D -e -f '$WORK/sshd_config' 2>'$WORK/sshd.log' & wait" &
    NS_PID=$!
    for _ in $(seq 50); do
        if ssh_to "$WORKER_SSH" true 2>/dev/null && ssh_to "$HEAD_SSH" true 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    cat "$WORK/sshd.log" >&2; echo "sshd did not come up" >&2; return 1
}

ssh_to() {
    local host=$1; shift
    ssh -i "$WORK/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR "root@$host" "$@"
}

write_cluster_yaml() {
    local port=$1
    cat >"$WORK/cluster.yaml" <<EOF
# generated by scripts/cluster_smoke.sh (see cluster.yaml for the example to edit)
cluster_name: kpbsmoke
provider: {type: local, head_ip: $HEAD_SSH, worker_ips: [$WORKER_SSH]}
auth: {ssh_user: root, ssh_private_key: $WORK/id_ed25519}
min_workers: 1
max_workers: 1
upscaling_speed: 1.0
idle_timeout_minutes: 30
file_mounts: {"~/kpbench": "$ROOT/"}
rsync_exclude: [".git", ".asv", "results", "build", "**/__pycache__"]
initialization_commands: []
setup_commands:
  - python -c 'import kpbench, ray, torch; print("kpbench from", kpbench.__file__)'
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands:
  - ray start --head --node-ip-address=$HEAD_RAY --port=$port --temp-dir=$WORK/ray --include-dashboard=false --num-cpus=1 --autoscaling-config=~/ray_bootstrap_config.yaml --disable-usage-stats
worker_start_ray_commands:
  - ray start --address=$HEAD_RAY:$port --node-ip-address=$WORKER_SSH --num-cpus=1 --disable-usage-stats
EOF
}

wait_for_nodes() {   # until the cluster has $1 live nodes (or give up after $2 s)
    local want=$1 deadline=$((SECONDS + $2)) n=0
    while [ $SECONDS -lt $deadline ]; do
        n=$(ssh_to "$HEAD_SSH" "$PYBIN/python -c \"import ray; ray.init(address='$HEAD_RAY:$PORT', log_to_driver=False); print(sum(x['Alive'] for x in ray.nodes()))\"" 2>/dev/null | tail -1)
        [ "$n" = "$want" ] && { echo "$n nodes"; return 0; }
        sleep 5
    done
    echo "after $2 s the cluster has ${n:-?} live node(s), not $want"; return 1
}

main() {
    prerequisites "${1:-}"
    WORK=$(mktemp -d /tmp/kpbsmoke.XXXXXX)
    trap cleanup EXIT
    export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
    log "sshd on $HEAD_SSH:22 and $WORKER_SSH:22 (own PID namespace), throwaway key"
    start_sshd
    PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    write_cluster_yaml "$PORT"
    log "ray up (head $HEAD_SSH, worker $WORKER_SSH)"
    "$RAY" up -y --no-config-cache "$WORK/cluster.yaml" >"$WORK/ray_up.log" 2>&1 \
        || { tail -40 "$WORK/ray_up.log"; echo "ray up failed"; return 1; }
    grep -E "kpbench from|Ray runtime started|Local node IP" "$WORK/ray_up.log" | sed 's/\x1b\[[0-9;]*m//g' || true
    log "waiting for the autoscaler to start the worker node over SSH"
    if ! wait_for_nodes 2 180; then
        echo "(continuing on the head alone); the autoscaler's log:"
        tail -25 "$WORK"/ray/session_latest/logs/monitor.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' || true
    fi
    log "ray submit cluster.yaml scripts/ray_sweep.py -- ${SWEEP[*]}"
    "$RAY" submit "$WORK/cluster.yaml" "$ROOT/scripts/ray_sweep.py" -- "${SWEEP[@]}" \
        --address "$HEAD_RAY:$PORT" --out "$WORK/home/results" --no-progress 2>&1 \
        | grep -v -i -E "warn|deprecat" | tail -5
    log "ray rsync-down cluster.yaml ~/results/ -> $WORK/fetched/"
    mkdir -p "$WORK/fetched"
    "$RAY" rsync-down "$WORK/cluster.yaml" "$WORK/home/results/" "$WORK/fetched/" >"$WORK/rsync.log" 2>&1 \
        || { cat "$WORK/rsync.log"; return 1; }
    "$PYTHON" - "$WORK/fetched" <<'EOF'
import sys
import pandas as pd
rows = pd.read_parquet(f"{sys.argv[1]}/sweeps")
print(rows[["op", "backend", "N", "status", "node_ip", "time_median_s"]].to_string(index=False))
by_node = rows["node_ip"].value_counts().to_dict()
print(f"{len(rows)} rows, {int((rows.status == 'ok').sum())} ok, points per node: {by_node}")
assert len(rows) == 8 and (rows.status == "ok").all(), "the sweep did not complete"
EOF
    log "kpbench report"
    (cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m kpbench.suite.cli report \
        "$WORK/fetched" --out "$WORK/report") | tail -3
    test -s "$WORK/report/report.html"
    log "ray down"
    "$RAY" down -y "$WORK/cluster.yaml" >"$WORK/ray_down.log" 2>&1 && DOWN_DONE=1
    sleep 2
    local left
    left=$(ps -e -o pid=,args= | { grep -F "$WORK/ray" || true; } | { grep -v grep || true; } | wc -l)
    echo "Ray processes of this cluster left after ray down: $left"
    log "cluster smoke: all steps passed"
}

main "$@"
