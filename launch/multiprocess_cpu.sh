#!/usr/bin/env bash
# N local processes x M emulated CPU devices each, joined by jax.distributed
# on 127.0.0.1: the multi-host path, runnable on one CPU machine.
#   launch/multiprocess_cpu.sh N M CONFIG WORKDIR [FLAGS...]
# e.g. launch/multiprocess_cpu.sh 2 2 configs/smoke.py:mmoe workdirs/mp
# Process i logs to WORKDIR/process_i.log; process 0's lines (evaluations,
# warnings, summary) are also shown on stderr. The exit code is the first
# non-zero one: every process is killed if one fails, and that process's
# number, exit code and last lines are shown (launch/lib.sh).
set -euo pipefail
usage='usage: launch/multiprocess_cpu.sh N M CONFIG WORKDIR [FLAGS...]'
n=${1:?$usage}; m=${2:?$usage}; config=${3:?$usage}; workdir=${4:?$usage}
shift 4
# shellcheck source=launch/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
port=${MTL_COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
for ((i = 0; i < n; i++)); do
  mtl_start "$i" "$workdir/process_$i.log" \
    env JAX_PLATFORMS=cpu mtl-train --config="$config" --workdir="$workdir" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$n" \
    --process_id="$i" --num_cpu_devices="$m" \
    --config.parallel.num_devices=0 --config.input_mode=host \
    --config.progress_bar=false "$@"
done
status=0
mtl_wait launch/multiprocess_cpu.sh || status=$?
exit "$status"
