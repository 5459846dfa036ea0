# shellcheck shell=bash
# What every launcher shares, sourced by them: start mtl-train processes,
# wait for them, and tell the user what happened.
#   mtl_start I LOG CMD...  runs CMD in the background as process I; its
#                           output goes to LOG, process 0's also to stderr
#                           (mtl-train writes everything there: evaluations,
#                           warnings, the summary).
#   mtl_wait NAME           waits for the processes started, whichever ends
#                           first; on the first non-zero exit, names that
#                           process, its exit code and its last 20 lines
#                           ("NAME: process I exited with S; ..."), kills
#                           the others (SIGKILL: processes waiting for it in
#                           jax.distributed catch SIGTERM) and returns S.
#   mtl_log_dir WORKDIR     where the process logs go: WORKDIR, or for a
#                           bucket (gs://...) ${TMPDIR:-/tmp}/mtl-logs.
# A SIGTERM (a scheduler's preemption notice) or a Ctrl-C to the launcher
# is passed on to the processes as SIGTERM (processes started in the
# background ignore SIGINT until mtl-train's training loop handles it):
# they save a checkpoint and exit (143; 130 if a Ctrl-C reached them
# first), and the launcher waits for them.

_mtl_pids=()
declare -A _mtl_index=() _mtl_logs=()

mtl_log_dir() {
  if [[ $1 == *://* ]]; then
    echo "${TMPDIR:-/tmp}/mtl-logs"
  else
    echo "$1"
  fi
}

mtl_start() {
  local i=$1 log=$2
  shift 2
  mkdir -p "$(dirname "$log")"
  if ((i == 0)); then
    # tee outlives a Ctrl-C or a SIGTERM to the process group, so the run
    # can still write while it saves (it ends when the run's output closes).
    "$@" > >(trap '' INT TERM; exec tee "$log" >&2) 2>&1 &
  else
    "$@" >"$log" 2>&1 &
  fi
  _mtl_pids+=("$!")
  _mtl_index[$!]=$i
  _mtl_logs[$!]=$log
}

_mtl_kill() { kill -9 "${_mtl_pids[@]}" 2>/dev/null || true; }
_mtl_forward() { kill -"$1" "${_mtl_pids[@]}" 2>/dev/null || true; }

mtl_wait() {
  local name=$1 status=0 done_pid pid i
  local remaining=("${_mtl_pids[@]}") left
  trap _mtl_kill EXIT
  trap '_mtl_forward TERM' TERM INT
  while ((${#remaining[@]})); do
    done_pid=''
    status=0
    wait -n -p done_pid "${remaining[@]}" || status=$?
    # A trapped signal ends the wait without a process: wait again.
    [[ -n ${done_pid-} ]] || continue
    left=()
    for pid in "${remaining[@]}"; do
      [[ $pid == "$done_pid" ]] || left+=("$pid")
    done
    remaining=("${left[@]+"${left[@]}"}")
    if ((status)); then
      i=${_mtl_index[$done_pid]}
      echo "$name: process $i exited with $status;" \
        "its last lines (${_mtl_logs[$done_pid]}):" >&2
      tail -n 20 "${_mtl_logs[$done_pid]}" >&2 || true
      _mtl_kill
      break
    fi
  done
  wait 2>/dev/null || true # tee
  trap - EXIT TERM INT
  return "$status"
}
