"""A trained run's recorded config read back (shell code).

mtl-eval, mtl-predict and mtl-export open a workdir (mtl/shell/restore.py);
this module is where they read its config.json:

- `read_config`: config.json as a ConfigDict, the plugins it names loaded;
- `eval_settings`: what they read of it, typed and frozen (`EvalSettings`:
  the evaluation's batch size and AUC bins, the host-side metrics, which
  checkpoint results.json reports, the model's name), read once;
- `load_dataset`: the dataset the run trained on, in memory;
- `artefact_of`: preprocessing.json's record of that dataset, for a
  workdir written before the file existed.

The model is rebuilt from the config by the builders (mtl/shell/build.py).
"""

import dataclasses
import json
import pathlib

import ml_collections

from mtl.core import metrics_registry
from mtl.data import preprocessing
from mtl.errors import WorkdirError
from mtl.shell import build, plugins, selection
from mtl.shell.config_record import CONFIG_FILE


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """What a restored run's tools read of its config."""

  eval_batch_size: int
  num_auc_bins: int
  # config.eval_metrics, unchecked (mtl-eval checks them); a run recorded
  # before the key: the default.
  eval_metrics: tuple
  mode: str  # selection.mode_of(select_best): first, last, mean, per_task.
  model_name: str


def read_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The run's config.json; the plugins it names are loaded."""
  path = workdir / CONFIG_FILE
  if not workdir.is_dir():
    raise WorkdirError(
      f'{workdir} is not a directory, expected the workdir of an mtl-train run'
    )
  if not path.is_file():
    raise WorkdirError(
      f'{workdir} has no {CONFIG_FILE}, expected the workdir of an mtl-train '
      'run'
    )
  try:
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
  except ValueError as e:
    raise WorkdirError(f'{path} is not JSON ({e})') from e
  plugins.load(config.get('plugins'))
  return config


def eval_settings(config) -> EvalSettings:
  """The restored run's settings, read once from its config.json."""
  return EvalSettings(
    eval_batch_size=config.eval_batch_size,
    num_auc_bins=config.num_auc_bins,
    eval_metrics=tuple(config.get('eval_metrics', metrics_registry.DEFAULT)),
    mode=selection.mode_of(config.select_best),
    model_name=config.model_name,
  )


def load_dataset(config):
  """The run's dataset in memory (a run that streamed its training rows
  from disk is evaluated on the same splits, loaded whole)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.get('input_mode') == 'stream':
    config.input_mode = 'device'
  return build.load_dataset(config)


def artefact_of(config, dataset) -> dict:
  """preprocessing.json's record of the run's (loaded) dataset."""
  return preprocessing.artefact(
    config.dataset_name, config.dataset.to_dict(), dataset
  )
