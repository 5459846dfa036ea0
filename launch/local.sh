#!/usr/bin/env bash
# One host, all its devices (GPUs, TPU cores, or CPU): data-parallel mtl-train.
#   launch/local.sh configs/census_mmoe.py workdirs/census_mmoe [--config.x=y ...]
# Data-parallel runs take host batches; the global batch must divide evenly
# over the devices.
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [FLAGS...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [FLAGS...]}
shift 2
exec mtl-train --config="$config" --workdir="$workdir" \
  --config.parallel.num_devices=0 --config.input_mode=host "$@"
