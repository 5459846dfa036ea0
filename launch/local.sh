#!/usr/bin/env bash
# One host, all its devices (GPUs, TPU cores, or CPU): data-parallel mtl-train.
#   launch/local.sh configs/census_mmoe.py workdirs/census_mmoe [--config.x=y ...]
# Data-parallel runs take host batches; the global batch must divide evenly
# over the devices. The run's lines (evaluations, warnings, summary) show on
# stderr and go to WORKDIR/process_0.log; if it fails, its exit code and
# last lines are repeated and the script exits with that code
# (launch/lib.sh).
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [FLAGS...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [FLAGS...]}
shift 2
# shellcheck source=launch/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mtl_start 0 "$(mtl_log_dir "$workdir")/process_0.log" \
  mtl-train --config="$config" --workdir="$workdir" \
  --config.parallel.num_devices=0 --config.input_mode=host "$@"
status=0
mtl_wait launch/local.sh || status=$?
exit "$status"
