#!/usr/bin/env bash
# The same command on every worker of a multi-host TPU VM (a v4-32 has 4):
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all \
#     --command="cd mtl && launch/tpu_vm.sh configs/census_mmoe.py gs://bucket/run"
# jax.distributed configures itself from the TPU VM's metadata; WORKDIR must
# be shared by all workers (a GCS bucket or NFS). Worker i logs to
# WORKDIR/process_i.log (for a bucket, /tmp/mtl-logs/process_i.log on the
# worker); worker 0's lines (evaluations, warnings, summary) are also shown.
# A worker that fails prints its number, exit code and last lines
# (launch/lib.sh) and exits with that code, which gcloud reports.
set -euo pipefail
config=${1:?usage: launch/tpu_vm.sh CONFIG WORKDIR [FLAGS...]}
workdir=${2:?usage: launch/tpu_vm.sh CONFIG WORKDIR [FLAGS...]}
shift 2
# shellcheck source=launch/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# This worker's number, as jax.distributed reads it (0 off a TPU VM).
worker=${TPU_WORKER_ID:-$(curl -sf -m 5 -H 'Metadata-Flavor: Google' \
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number ||
  echo 0)}
mtl_start "$worker" "$(mtl_log_dir "$workdir")/process_$worker.log" \
  mtl-train --config="$config" --workdir="$workdir" \
  --config.parallel.num_devices=0 --config.input_mode=host "$@"
status=0
mtl_wait launch/tpu_vm.sh || status=$?
exit "$status"
