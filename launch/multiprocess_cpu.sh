#!/usr/bin/env bash
# N local processes x M emulated CPU devices each, joined by jax.distributed
# on 127.0.0.1: the multi-host path, runnable on one CPU machine.
#   launch/multiprocess_cpu.sh N M CONFIG WORKDIR [FLAGS...]
# e.g. launch/multiprocess_cpu.sh 2 2 configs/smoke.py:mmoe /tmp/mp
# Process i logs to WORKDIR/process_i.log; process 0's lines (evaluations,
# warnings, summary) are also shown on stderr. The exit code is the first
# non-zero one: every process is killed if one fails, and that process's
# number and last lines are shown.
set -euo pipefail
usage='usage: launch/multiprocess_cpu.sh N M CONFIG WORKDIR [FLAGS...]'
n=${1:?$usage}; m=${2:?$usage}; config=${3:?$usage}; workdir=${4:?$usage}
shift 4
port=${MTL_COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$workdir"
declare -A rank=()  # pid -> process index
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for ((i = 0; i < n; i++)); do
  log="$workdir/process_$i.log"
  args=(--config="$config" --workdir="$workdir"
    --coordinator_address="127.0.0.1:$port" --num_processes="$n"
    --process_id="$i" --num_cpu_devices="$m"
    --config.parallel.num_devices=0 --config.input_mode=host
    --config.progress_bar=false "$@")
  if ((i == 0)); then
    JAX_PLATFORMS=cpu mtl-train "${args[@]}" > >(tee "$log" >&2) 2>&1 &
  else
    JAX_PLATFORMS=cpu mtl-train "${args[@]}" >"$log" 2>&1 &
  fi
  pids+=($!)
  rank[$!]=$i
done
status=0
remaining=("${pids[@]}")
while ((${#remaining[@]})); do
  # Whichever process ends first: one that fails leaves the others waiting
  # for it in jax.distributed, and they catch SIGTERM, so they get SIGKILL.
  done_pid=''
  wait -n -p done_pid "${remaining[@]}" || status=$?
  left=()
  for pid in "${remaining[@]}"; do
    [[ $pid == "$done_pid" ]] || left+=("$pid")
  done
  remaining=("${left[@]+"${left[@]}"}")
  if ((status)); then
    i=${rank[$done_pid]:-?}
    echo "launch/multiprocess_cpu.sh: process $i exited with $status;" \
      "its last lines ($workdir/process_$i.log):" >&2
    tail -n 20 "$workdir/process_$i.log" >&2 || true
    cleanup
    break
  fi
done
wait 2>/dev/null || true  # tee
trap - EXIT
exit "$status"
