#!/usr/bin/env bash
# The same command on every worker of a multi-host TPU VM (a v4-32 has 4):
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all \
#     --command="cd mtl && launch/tpu_vm.sh configs/census_mmoe.py gs://bucket/run"
# jax.distributed configures itself from the TPU VM's metadata; WORKDIR must
# be shared by all workers (a GCS bucket or NFS).
set -euo pipefail
config=${1:?usage: launch/tpu_vm.sh CONFIG WORKDIR [FLAGS...]}
workdir=${2:?usage: launch/tpu_vm.sh CONFIG WORKDIR [FLAGS...]}
shift 2
exec mtl-train --config="$config" --workdir="$workdir" \
  --config.parallel.num_devices=0 --config.input_mode=host "$@"
