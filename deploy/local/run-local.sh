#!/usr/bin/env bash
# Fit a store on a throwaway Dask cluster on this machine.
#
#   deploy/local/run-local.sh STORE OUT [N_WORKERS] [stream-relu fit options...]
#
# Starts one `dask scheduler` (127.0.0.1, a free port, no dashboard) and
# N_WORKERS `dask worker` processes (one single-threaded worker each; default:
# one per core), waits until all of them are connected, runs
#
#   stream-relu fit STORE --out OUT --scheduler ADDRESS [options...]
#
# and stops every process it started, whatever happened (also on Ctrl-C or
# SIGTERM).  The exit status is the fit's (see the exit status table in
# README.md); 1 when the cluster did not come up; 2 for a usage error.
#
# Environment:
#   DASK_CONFIG      dask configuration file or folder
#                    (default: deploy/dask/stream-relu.yaml)
#   TLS_DIR          folder holding ca.crt, tls.crt and tls.key (as written by
#                    deploy/tls/make-certs.sh): run over tls:// with the settings
#                    of deploy/dask/tls.yaml, its certificate paths moved there
#   WORKER_MEMORY    --memory-limit of each worker (default: auto)
#   STARTUP_TIMEOUT  seconds to wait for the scheduler and the workers (default 60)
#   PYTHON           interpreter with distributed installed (default: python3)
#   KEEP_LOGS=1      keep the scheduler and worker logs (their folder is printed)
#
# Needs bash 4.4 or later.  `dask`, `stream-relu` and PYTHON must come from
# the same environment (activate the virtual environment first).

set -euo pipefail
# Job control: every background process leads its own process group, so the
# cleanup stops a worker together with the process its nanny spawned, and
# Ctrl-C in a terminal reaches this script only, which then stops them all.
set -m

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
}

if [[ $# -lt 2 || "$1" == -* || "$2" == -* ]]; then
    usage
    exit 2
fi
store=$1
out=$2
shift 2
n_workers=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    n_workers=$1
    shift
fi
if [[ "$n_workers" -lt 1 ]]; then
    echo "run-local.sh: N_WORKERS must be at least 1" >&2
    exit 2
fi

dask_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../dask" && pwd)
export DASK_CONFIG="${DASK_CONFIG:-$dask_dir/stream-relu.yaml}"
python="${PYTHON:-python3}"
timeout="${STARTUP_TIMEOUT:-60}"
memory="${WORKER_MEMORY:-auto}"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/stream-relu-local.XXXXXX")
scheduler_file="$workdir/scheduler.json"
scheduler_pid=""
worker_pids=()
fit_pid=""

log() { echo "run-local.sh: $*" >&2; }

# Stops a process group: SIGTERM, up to 15 s of grace, then SIGKILL.
stop_group() {
    local pgid=$1 i
    kill -TERM -- "-$pgid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 -- "-$pgid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "process group $pgid ignored SIGTERM; killing it"
    kill -KILL -- "-$pgid" 2>/dev/null || true
}

show_logs() {
    local f
    for f in "$workdir"/*.log; do
        [[ -f "$f" ]] || continue
        echo "---- $(basename "$f") (last lines) ----" >&2
        tail -n 20 "$f" >&2
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    local pid stoppers=()
    # An interrupted fit first, then the workers in parallel (their nannies
    # retire them), then the scheduler.
    if [[ -n "$fit_pid" ]]; then stop_group "$fit_pid"; fi
    for pid in "${worker_pids[@]}"; do
        stop_group "$pid" &
        stoppers+=("$!")
    done
    for pid in "${stoppers[@]}"; do wait "$pid"; done
    if [[ -n "$scheduler_pid" ]]; then stop_group "$scheduler_pid"; fi
    if [[ $status -ne 0 && -z "${address:-}" ]]; then show_logs; fi
    if [[ "${KEEP_LOGS:-0}" == 1 ]]; then
        log "logs kept in $workdir"
    else
        rm -rf "$workdir"
    fi
    log "stopped the scheduler and ${#worker_pids[@]} worker(s); exit status $status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

protocol=tcp
if [[ -n "${TLS_DIR:-}" ]]; then
    # The configuration becomes a folder: the files of DASK_CONFIG, then
    # deploy/dask/tls.yaml with its certificate paths moved into TLS_DIR.
    protocol=tls
    "$python" - "$DASK_CONFIG" "$dask_dir/tls.yaml" "$TLS_DIR" "$workdir/dask-config" <<'EOF' || exit 2
import os
import shutil
import sys

import yaml

base, tls_file, tls_dir, dest = sys.argv[1:]
tls_dir = os.path.abspath(tls_dir)
for name in ("ca.crt", "tls.crt", "tls.key"):
    if not os.path.isfile(os.path.join(tls_dir, name)):
        sys.exit(f"run-local.sh: TLS_DIR {tls_dir} has no {name} (deploy/tls/make-certs.sh writes them)")
os.makedirs(dest)
if os.path.isdir(base):
    for name in sorted(os.listdir(base)):
        if name.endswith((".yaml", ".yml", ".json")):
            shutil.copy(os.path.join(base, name), os.path.join(dest, "00-" + name))
elif os.path.isfile(base):
    shutil.copy(base, os.path.join(dest, "00-" + os.path.basename(base)))


def move(node):
    if isinstance(node, dict):
        return {key: move(value) for key, value in node.items()}
    if isinstance(node, str) and node.startswith("/etc/dask/tls/"):
        return os.path.join(tls_dir, os.path.basename(node))
    return node


with open(tls_file) as fh:
    settings = move(yaml.safe_load(fh))
with open(os.path.join(dest, "zz-tls.yaml"), "w") as fh:
    yaml.safe_dump(settings, fh)
EOF
    export DASK_CONFIG="$workdir/dask-config"
fi

dask scheduler --host 127.0.0.1 --port 0 --protocol "$protocol" --no-dashboard \
    --scheduler-file "$scheduler_file" >"$workdir/scheduler.log" 2>&1 &
scheduler_pid=$!
log "scheduler pid $scheduler_pid"

for ((i = 0; i < timeout * 10; i++)); do
    [[ -s "$scheduler_file" ]] && break
    if ! kill -0 "$scheduler_pid" 2>/dev/null; then
        log "the scheduler exited during startup"
        exit 1
    fi
    sleep 0.1
done
if [[ ! -s "$scheduler_file" ]]; then
    log "no scheduler file after ${timeout}s"
    exit 1
fi

for ((i = 1; i <= n_workers; i++)); do
    dask worker --scheduler-file "$scheduler_file" --nthreads 1 --nworkers 1 \
        --name "local-$i" --memory-limit "$memory" --no-dashboard \
        --local-directory "$workdir/worker-$i" >"$workdir/worker-$i.log" 2>&1 &
    worker_pids+=("$!")
done
log "worker pids ${worker_pids[*]}"

# Connects as the fit will (same configuration, so the same TLS settings),
# waits for every worker, and prints the scheduler's address.
address=$("$python" - "$scheduler_file" "$n_workers" "$timeout" <<'EOF'
import sys

from distributed import Client

scheduler_file, n_workers, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with Client(scheduler_file=scheduler_file, timeout=timeout) as client:
    client.wait_for_workers(n_workers, timeout=timeout)
    print(client.scheduler.address)
EOF
) || {
    log "the cluster did not reach $n_workers worker(s) within ${timeout}s"
    exit 1
}
log "scheduler $address has $n_workers worker(s); DASK_CONFIG=$DASK_CONFIG"

# In the background, so that a signal to this script is handled at once
# (bash runs traps only between foreground commands) and stops the fit too.
stream-relu fit "$store" --out "$out" --scheduler "$address" "$@" &
fit_pid=$!
status=0
wait "$fit_pid" || status=$?
fit_pid=""
exit "$status"
