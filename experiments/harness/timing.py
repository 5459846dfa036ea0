"""Timing the compiled training program (experiments/population_speed.py,
experiments/accelerator_check.py)."""

import statistics
import time


def examples_per_s(
  config, dataset, *, members: int, repeats: int, steps: int | None = None
) -> dict:
  """The scanned training program of `members` stacked members (1: the
  single run's own program), timed as `mtl-train` runs it (the dataset on
  the device, lax.scan over the steps of a dispatch): the median of
  `repeats` dispatches of `steps` steps (default: the config's
  steps_per_dispatch; at most an epoch) after a compiling one."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mtl.core import population, train_state, train_step
  from mtl.data import pipeline
  from mtl.shell import build

  split = dataset.splits['train']
  n = split['labels'].shape[1]
  bs = config.batch_size
  spe = pipeline.steps_per_epoch(n, bs)
  k = min(steps or config.steps_per_dispatch, spe)
  model, tx, weighting = build.build(config, dataset, spe)
  step = train_step.make_train_step(
    model, tx, weighting, dataset.tasks, steps_per_epoch=spe
  )
  example = train_step.features_of(pipeline.take_rows(split, np.arange(2)))
  data = jax.device_put(split)
  keys = [jax.random.key(i) for i in range(members)]
  perms = jnp.stack([pipeline.epoch_permutation(key, 0, n) for key in keys])
  if members == 1:
    state = train_state.init_train_state(
      model, tx, weighting, example, num_tasks=dataset.num_tasks, key=keys[0]
    )
    run = jax.jit(
      train_step.make_scanned_steps(step, batch_size=bs, num_steps=k),
      donate_argnums=0,
    )
    call = lambda state, first: run(state, data, perms[0], first)  # noqa: E731
  else:
    state = population.init_population(
      model,
      tx,
      [weighting] * members,
      example,
      num_tasks=dataset.num_tasks,
      init_keys=keys,
    )
    hparams = {
      'task_weights': jnp.ones((members, dataset.num_tasks)),
      'lr_scale': jnp.ones((members,)),
      'member': jnp.arange(members, dtype=jnp.int32),
    }
    run = jax.jit(
      population.make_population_steps(step, batch_size=bs, num_steps=k),
      donate_argnums=0,
    )
    call = lambda state, first: run(state, hparams, data, perms, first)  # noqa: E731
  state = jax.block_until_ready(call(state, 0))[0]  # Compiles.
  times = []
  for r in range(repeats):
    first = ((r + 1) * k) % (spe - k + 1)
    t0 = time.perf_counter()
    state = jax.block_until_ready(call(state, first))[0]
    times.append(time.perf_counter() - t0)
  t = statistics.median(times)
  return {
    'batch_size': bs,
    'members': members,
    'steps_per_dispatch': k,
    'ms_per_step': t / k * 1e3,
    'examples_per_s': members * bs * k / t,
  }
