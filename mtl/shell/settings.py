"""The training loop's settings, read once from the config (shell code).

`from_config(config)` is where the training loop reads its ConfigDict: it
returns `Settings`, typed and frozen, that the loop's phases
(mtl/shell/trainer.py, run_setup.py, epoch_loop.py, finish.py) and the
engines (engines.py, population_engine.py, epochs.py) and the training
input (inputs.make_input) receive instead of the config. `LoopSettings` is
what the loop does when (epochs, intervals, checkpoints, selection, the
finite guard); `EngineSettings` how the members
step and evaluate (seed, input mode, batch sizes, dispatches, devices);
`RunRecord` what the run's outputs record of its config (config.json,
the W&B run's settings, results.json's description of the run).
The values are the config's own, unconverted, so a run is the same bit for
bit. `validate.check_config` has checked their types and ranges first.
"""

import dataclasses

from mtl.shell import profiling


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """When the training loop evaluates, logs, saves, selects and stops."""

  num_epochs: int
  batch_size: int  # Global training batch (examples per second).
  eval_every_epochs: int
  log_every_steps: int
  diagnostics_every_steps: int
  checkpoint_every_steps: int  # 0: at epoch ends.
  max_to_keep: int  # Of checkpoints/.
  async_save: bool
  select_best: str  # As in the config: selection.mode_of reads it.
  patience: int  # early_stopping.patience; 0: off.
  skip_nonfinite: bool
  max_consecutive_nonfinite: int
  divergence_factor: float
  stop_on_divergence: bool
  progress_bar: bool
  init_from: str | None  # A workdir whose params start the run.
  profile_steps: tuple[int, int] | None  # profile.steps 'A:B'; None: off.


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  """How an engine steps its members and evaluates them."""

  seed: int
  input_mode: str  # 'device', 'host' or 'stream'.
  batch_size: int
  eval_batch_size: int
  steps_per_dispatch: int
  num_auc_bins: int
  skip_nonfinite: bool
  parallel_backend: str
  num_devices: int  # parallel.num_devices as configured (0: all).
  weighting_name: str
  learning_rate: float  # optimizer.learning_rate (a member's scale).
  bagging: bool  # population.bagging.


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """What a run's outputs record of its config (read once)."""

  config: dict  # The config as config.json records it.
  wandb: dict  # The W&B run's settings (mode, project, group, ...).
  model_name: str
  model: dict  # The model's keywords that are set (not None).
  dataset_name: str
  dataset: dict  # The dataset's keywords.
  weighting_name: str
  parallel_backend: str


@dataclasses.dataclass(frozen=True)
class Settings:
  """A run's settings: the loop's and the engine's, and its record."""

  loop: LoopSettings
  engine: EngineSettings
  allow_changes: bool  # workdir_allow_changes.
  record: RunRecord


def engine_settings(config) -> EngineSettings:
  """The engine's settings of a config."""
  return EngineSettings(
    seed=config.seed,
    input_mode=config.input_mode,
    batch_size=config.batch_size,
    eval_batch_size=config.eval_batch_size,
    steps_per_dispatch=config.steps_per_dispatch,
    num_auc_bins=config.num_auc_bins,
    skip_nonfinite=config.skip_nonfinite,
    parallel_backend=config.parallel.backend,
    num_devices=config.parallel.num_devices,
    weighting_name=config.weighting_name,
    learning_rate=config.optimizer.learning_rate,
    bagging=config.population.bagging,
  )


def loop_settings(config) -> LoopSettings:
  """The training loop's settings of a config."""
  return LoopSettings(
    num_epochs=config.num_epochs,
    batch_size=config.batch_size,
    eval_every_epochs=config.eval_every_epochs,
    log_every_steps=config.log_every_steps,
    diagnostics_every_steps=config.diagnostics_every_steps,
    checkpoint_every_steps=config.checkpoint.every_steps,
    max_to_keep=config.checkpoint.max_to_keep,
    async_save=config.checkpoint.async_save,
    select_best=config.select_best,
    patience=config.early_stopping.patience,
    skip_nonfinite=config.skip_nonfinite,
    max_consecutive_nonfinite=config.max_consecutive_nonfinite,
    divergence_factor=config.divergence_factor,
    stop_on_divergence=config.stop_on_divergence,
    progress_bar=config.progress_bar,
    init_from=config.init_from,
    profile_steps=profiling.parse_steps(config.profile.steps),
  )


def run_record(config) -> RunRecord:
  """What the run's outputs record of a config."""
  return RunRecord(
    config=record_of(config),
    wandb=config.wandb.to_dict(),
    model_name=config.model_name,
    model={k: v for k, v in config.model.items() if v is not None},
    dataset_name=config.dataset_name,
    dataset=config.dataset.to_dict(),
    weighting_name=config.weighting_name,
    parallel_backend=config.parallel.backend,
  )


def from_config(config) -> Settings:
  """The run's settings, read once from its (validated) config."""
  return Settings(
    loop=loop_settings(config),
    engine=engine_settings(config),
    allow_changes=config.workdir_allow_changes,
    record=run_record(config),
  )


def record_of(config) -> dict:
  """The config as the workdir records it (config.json)."""
  return config.to_dict()
