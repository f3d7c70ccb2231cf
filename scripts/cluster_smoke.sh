#!/usr/bin/env bash
# The `ray submit` path end to end, on this machine, over real SSH:
#   sshd on loopback -> ray up (local provider: head 127.0.0.1, worker 127.0.0.2)
#   -> ray submit cluster.yaml scripts/ray_sweep.py -- <a small sweep>
#   -> ray rsync-down the Parquet -> kpbench report -> ray down
# and cleans up after itself (sshd, every Ray process, the throwaway key, the folder).
#
#   scripts/cluster_smoke.sh [--install] [--keep]
#       --install: apt-get install openssh-server rsync if missing
#       --keep (or KPBENCH_SMOKE_KEEP=1): keep the work folder (logs, Ray's session, the
#       monitor's log, the generated cluster.yaml) for inspection; processes are still stopped
#
# Exit 0: all steps passed and the worker node ran points of the sweep; 77: a prerequisite
# is missing (openssh-server, rsync, port 22 on 127.0.0.1/127.0.0.2 taken, not root);
# anything else: the step that failed says so (a worker that never joins fails the smoke
# at the end, after the other steps have run on the head alone).
#
# How it stays on loopback and harmless to the machine:
# * sshd listens on 127.0.0.1:22 and 127.0.0.2:22 only (Ray's launcher has no SSH port
#   setting), with a host key and one authorized key made here, root by key only.
# * sshd runs in its own PID namespace (unshare --pid --mount-proc): every process the
#   launcher starts over SSH lives there, so the `ray stop` that `ray down` runs (it kills
#   every Ray process it can see) sees only this cluster's, and killing the namespace at
#   the end leaves nothing behind.
# * root's home directory is <work>/home inside the namespace only (a copy of /etc/passwd
#   bind-mounted over it there; the machine's /etc/passwd and ~root are untouched): Ray's
#   bootstrap files (~/ray_bootstrap_config.yaml, ~/ray_bootstrap_key.pem) land there.
#   Setting HOME alone (sshd's SetEnv) is not enough: OpenSSH expands `~` in the autoscaler's
#   `ssh -i ~/ray_bootstrap_key.pem` from the passwd entry, not from $HOME (see below).
# * RAY_TMPDIR=<work>/tmp, here and in the SSH sessions: the local provider's cluster state
#   file (cluster-kpbsmoke.state, which nodes are "running") lives there, not in /tmp/ray,
#   so no stale state from an earlier run can make the autoscaler think the worker is up.
# * The "nodes" install nothing (no internet, and never into the machine's Python): the
#   smoke's own setup_commands check that kpbench, torch and ray import from the checkout
#   that `file_mounts` copied (PYTHONPATH); the example cluster.yaml keeps pip installs.
# * Ray node addresses are 127.0.0.3 (head) and 127.0.0.2 (worker): Ray rewrites
#   --node-ip-address=127.0.0.1 into the machine's routable address. (The provider's head_ip
#   stays 127.0.0.1, so the v1 autoscaler logs "LoadMetrics: Removed 1 stale ip mappings:
#   {'127.0.0.3'} not in {'127.0.0.1', ...}": it then ignores the head's load, harmless with
#   min_workers = max_workers.)
#
# Why the worker node did not join before (Ray 2.60, issue 11), two causes, both fixed here:
# 1. `ray up` starts autoscaler v2 by default since Ray 2.50, and v2 never launches the
#    local provider's workers: the provider has ONE node type, "local.cluster.node", for the
#    head and the workers, and v2's scheduler counts the head towards that type's
#    min_workers (ray/autoscaler/v2/scheduler.py, _enforce_min_workers_per_type counts
#    every node of the type; only max_workers gets +1 for the head, v2/instance_manager/
#    config.py). The monitor then only ever has the head:
#      INFO instance_manager.py:247 -- New instance ALLOCATED (... type=local.cluster.node ...):
#           allocated unmanaged cloud instance :127.0.0.1 (HEAD) from cloud provider
#      INFO instance_manager.py:263 -- Update instance ALLOCATED->RAY_RUNNING (...) ... is IDLE
#    and nothing else for 180 s (no "Adding 1 nodes to satisfy min count"); its events say
#      "No available node types can fulfill resource requests {'CPU': 1.0}*1" (the type's
#      resources are {}). The scheduler alone shows it (Ray 2.60, no cluster needed; see
#      tests/test_cluster_smoke.py::test_autoscaler_v2_counts_the_local_head_as_a_worker):
#        head RAY_RUNNING, types {'local.cluster.node': (min 1, max 2, resources {})}
#        -> ResourceDemandScheduler().schedule(...).to_launch == []
#        the same head with the worker as a type of its own (min 1) -> [('worker', 1)]
#    Fix: RAY_UP_enable_autoscaler_v2=0 (Ray's own switch, printed by `ray up`): autoscaler
#    v1 counts workers by their tag, launches 127.0.0.2 and runs its setup over SSH.
#    (Set RAY_UP_enable_autoscaler_v2=1 to try v2 again with a later Ray.)
# 2. v1 then failed to reach the worker, in <work>/ray/session_latest/logs/monitor.err:
#      Warning: Identity file /root/ray_bootstrap_key.pem not accessible: No such file or directory.
#      root@127.0.0.2: Permission denied (publickey).
#    and monitor.out: "SSH still not available (SSH command failed.), retrying in 5 seconds."
#    (status waiting-for-ssh, forever): the key was in <work>/home, the sessions' $HOME, but
#    ssh expands `~` from the passwd entry (/root). Fix: the namespace's passwd (above).
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
    if [ -n "$WORK" ] && [ -n "$KEEP" ]; then
        rm -f "$WORK/id_ed25519" "$WORK/host_ed25519" "$WORK/home/ray_bootstrap_key.pem"   # keys go anyway
        echo "cluster_smoke: work folder kept: $WORK" >&2
    elif [ -n "$WORK" ]; then
        rm -rf "$WORK"
    fi
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
export RAY_TMPDIR="$RAY_TMPDIR"
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
MaxStartups 50
MaxSessions 50
EOF
    # root's home directory, for the namespace only: a copy of /etc/passwd bind-mounted over
    # it there (the mount namespace of --mount-proc is private: the machine's is untouched)
    awk -F: -v OFS=: -v home="$WORK/home" '$1 == "root" { $6 = home } 1' /etc/passwd >"$WORK/passwd"
    # PID 1 of the namespace is a shell that reaps orphans; sshd runs under it
    setsid unshare --pid --fork --mount-proc bash -c \
        "mount --bind '$WORK/passwd' /etc/passwd || exit 1
         /usr/sbin/sshd -D -e -f '$WORK/sshd_config' 2>'$WORK/sshd.log' & wait" &
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

KEEP=${KPBENCH_SMOKE_KEEP:-} INSTALL= WORKER_MISSING=
main() {
    local arg
    for arg in "$@"; do
        case $arg in
            --install) INSTALL=--install ;;
            --keep) KEEP=1 ;;
            *) echo "usage: $0 [--install] [--keep]" >&2; exit 2 ;;
        esac
    done
    [ "$KEEP" = 0 ] && KEEP=
    prerequisites "$INSTALL"
    WORK=$(mktemp -d /tmp/kpbsmoke.XXXXXX)
    trap cleanup EXIT
    export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_TMPDIR="$WORK/tmp"
    export RAY_UP_enable_autoscaler_v2=${RAY_UP_enable_autoscaler_v2:-0}   # cause 1 above
    mkdir -p "$RAY_TMPDIR"
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
        WORKER_MISSING="the worker node $WORKER_SSH never joined the cluster"
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
    "$PYTHON" - "$WORK/fetched" "$WORKER_SSH" "$WORK/worker_points" <<'EOF'
import pathlib, sys
import pandas as pd
rows = pd.read_parquet(f"{sys.argv[1]}/sweeps")
print(rows[["op", "backend", "N", "status", "node_ip", "time_median_s"]].to_string(index=False))
by_node = rows["node_ip"].value_counts().to_dict()
print(f"{len(rows)} rows, {int((rows.status == 'ok').sum())} ok, points per node: {by_node}")
pathlib.Path(sys.argv[3]).write_text(str(by_node.get(sys.argv[2], 0)))
assert len(rows) == 8 and (rows.status == "ok").all(), "the sweep did not complete"
EOF
    local on_worker
    on_worker=$(cat "$WORK/worker_points")
    echo "points run on the worker node $WORKER_SSH: $on_worker"
    [ "$on_worker" -gt 0 ] || WORKER_MISSING=${WORKER_MISSING:-"the worker node $WORKER_SSH ran no point"}
    log "kpbench report"
    (cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m kpbench report \
        "$WORK/fetched" --out "$WORK/report") | tail -3
    test -s "$WORK/report/report.html"
    log "ray down"
    "$RAY" down -y "$WORK/cluster.yaml" >"$WORK/ray_down.log" 2>&1 && DOWN_DONE=1
    sleep 2
    local left
    left=$(ps -e -o pid=,args= | { grep -F "$WORK/ray" || true; } | { grep -v grep || true; } | wc -l)
    echo "Ray processes of this cluster left after ray down: $left"
    if [ -n "${WORKER_MISSING:-}" ]; then
        log "cluster smoke: FAILED: $WORKER_MISSING (the other steps ran on the head alone)"
        return 1
    fi
    log "cluster smoke: all steps passed"
}

main "$@"
