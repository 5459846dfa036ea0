"""Training at embedding scale: step time against table rows.

  python experiments/scale_benchmark.py [--parts=step] [--rows=1e4,...,1e7]
      [--dim=16] [--batch=1024] [--steps=8] [--repeats=3]
      [--sparse_repeats=10] [--methods=dense_adam,lazy_adam,rowwise_adagrad]

Parts (`--parts`, comma-separated; `PARTS` maps a name to a function
`part() -> (record, markdown lines)`; each part is one section of the
results):

  step   the real train step (mtl.core.train_step, equal weighting) of a
         census-like MMoE whose one shared embedding table has --rows rows
         of width --dim: 7 dense features and 29 categorical columns, 28 of
         them census-sized (449 rows together) and one id column taking the
         rest of the table, its ids uniform (the worst case for caches).
         Optimizers: 'dense_adam' (optax.adam on every param, the table's
         dense [V, d] gradient: the default), and Adam on the other params
         beside sparse updates of the table (optimizer.sparse: 'lazy_adam',
         'rowwise_adagrad'). The state is donated (updated in place; checked
         by the table's buffer address) and --steps steps run in one
         lax.scan per call over device-resident data, as the trainer's
         device mode does. ms per step: median and min over the timed calls
         after a warm-up; dense sizes one at a time, sparse sizes all
         resident and timed round-robin so the load of this shared machine
         hits each alike; the 1-minute load average is recorded around
         every measurement. Goal: with sparse updates, the 1e7-row step
         within 1.5x the 1e4-row step.

  modes  (experiments/scale_streaming.py) streaming against the in-memory
         input modes on the same model and data. Goal: stream >= 0.7x.
  epoch  (experiments/scale_streaming.py) one streaming epoch over a
         generated split of --scale_rows rows: rows/s and peak RSS. Goal:
         peak RSS < 2 GB.
  prepare (experiments/scale_streaming.py) the `table` preparation of the
         --prepare_rows tables (default --scale_rows), each into an empty
         data dir: seconds, rows/s, CPU seconds, peak RSS, beside the
         builder before. Goal at 50M rows: <= 200 s, <= 2 GB.

Writes experiments/results/scale_benchmark.json and .md (or --out).
"""

import os
import pathlib
import statistics
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ and experiments/

from experiments import harness, scale_streaming  # noqa: E402

_PARTS = flags.DEFINE_list('parts', ['step'], 'Parts to run (PARTS).')
_ROWS = flags.DEFINE_list('rows', ['1e4', '1e5', '1e6', '1e7'], 'Table rows.')
_DIM = flags.DEFINE_integer('dim', 16, 'Embedding width.')
_BATCH = flags.DEFINE_integer('batch', 1024, 'Examples per step.')
_STEPS = flags.DEFINE_integer('steps', 8, 'Steps per scanned call.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls, dense.')
_SPARSE_REPEATS = flags.DEFINE_integer(
  'sparse_repeats', 10, 'Timed calls per size, sparse (round-robin).'
)
_METHODS = flags.DEFINE_list(
  'methods', ['dense_adam', 'lazy_adam', 'rowwise_adagrad'], 'Optimizers.'
)
harness.define_flags(out='scale_benchmark')
FLAGS = flags.FLAGS
GOAL = 1.5
NUM_DENSE = 7
# Census-income's 28 categorical vocabularies (+1 for unseen values) in
# size, not in content: 449 rows together.
CENSUS_VOCABS = (
  10, 52, 48, 18, 8, 25, 16, 10, 6, 4, 4, 9, 7, 51, 39, 7,
  10, 10, 10, 10, 4, 3, 3, 44, 2, 4, 4, 18,
)  # fmt: skip


def _load() -> float:
  return round(os.getloadavg()[0], 2)


class StepRun:
  """One optimizer on one table size: built, compiled, warmed up, timed."""

  def __init__(self, method: str, rows: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtl.core import optim, train_state, train_step
    from mtl.core.layers.embedding import lookups
    from mtl.core.model import make_model
    from mtl.core.tasks import Task
    from mtl.core.weighting import WEIGHTINGS

    dim, batch, steps = _DIM.value, _BATCH.value, _STEPS.value
    id_rows = rows - sum(CENSUS_VOCABS)
    if id_rows < 1:
      raise ValueError(f'--rows {rows} leaves no rows for the id column')
    vocab = CENSUS_VOCABS + (id_rows,)
    self.method, self.rows = method, rows
    model = make_model(
      'mmoe',
      dict(num_experts=8, expert_hidden=(16,)),
      num_tasks=2,
      vocab_sizes=vocab,
      embed_dim=dim,
      tower_hidden=(8,),
    )
    sparse = None
    if method != 'dense_adam':
      sparse = {'tables': ('table',), 'method': method}
    tx = optim.make_optimizer(
      'adam',
      1e-3,
      schedule='constant',
      sparse=sparse,
      table_shapes=lookups(vocab, dim)[1],
    )
    weighting = WEIGHTINGS['equal']()
    rng = np.random.default_rng(rows)
    n = batch * steps
    data = {
      'dense': rng.normal(size=(n, NUM_DENSE)).astype(np.float32),
      'sparse': np.stack([rng.integers(0, v, n) for v in vocab], axis=1).astype(
        np.int32
      ),
      'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
      'mask': np.ones((2, n), np.float32),
    }
    self.data = jax.device_put(data)
    self.perm = jnp.arange(n, dtype=jnp.int32)
    self.state = jax.jit(
      lambda key: train_state.init_train_state(
        model,
        tx,
        weighting,
        train_step.features_of(data),
        num_tasks=2,
        key=key,
      )
    )(jax.random.key(0))
    step = train_step.make_train_step(
      model, tx, weighting, (Task('a'), Task('b')), steps_per_epoch=1 << 30
    )
    self.fn = jax.jit(
      train_step.make_scanned_steps(step, batch_size=batch, num_steps=steps),
      donate_argnums=0,
    )
    self.steps = steps
    self.times, self.loads = [], []
    pointer = self._table().unsafe_buffer_pointer()
    self.call(record=False)  # Compile and warm up.
    self.in_place = self._table().unsafe_buffer_pointer() == pointer

  def _table(self):
    return self.state.params['embed']['table']

  def call(self, record: bool = True) -> None:
    import jax

    load = _load()
    t0 = time.perf_counter()
    self.state, metrics = self.fn(self.state, self.data, self.perm, 0)
    jax.block_until_ready((self.state, metrics))
    if record:
      self.times.append((time.perf_counter() - t0) / self.steps * 1e3)
      self.loads.append(load)

  def result(self) -> dict:
    return {
      'method': self.method,
      'rows': self.rows,
      'ms_median': statistics.median(self.times),
      'ms_min': min(self.times),
      'repeats': len(self.times),
      'load_mean': round(statistics.mean(self.loads), 2),
      'load_max': max(self.loads),
      'in_place': bool(self.in_place),
    }


def part_step():
  """The train step against table rows; see the module docstring."""
  sizes = [int(float(r)) for r in _ROWS.value]
  methods = _METHODS.value
  results = []
  for method in [m for m in methods if m.startswith('dense')]:
    for rows in sizes:
      run = StepRun(method, rows)
      for _ in range(_REPEATS.value):
        run.call()
      results.append(run.result())
      print(_line(results[-1]), flush=True)
      del run
  runs = [
    StepRun(m, rows)
    for m in methods
    if not m.startswith('dense')
    for rows in sizes
  ]
  for _ in range(_SPARSE_REPEATS.value):
    for run in runs:
      run.call()
  for run in runs:
    results.append(run.result())
    print(_line(results[-1]), flush=True)
  del runs
  small, large = min(sizes), max(sizes)
  for r in results:
    base = next(
      b for b in results if b['method'] == r['method'] and b['rows'] == small
    )
    r['x_median'] = r['ms_median'] / base['ms_median']
    r['x_min'] = r['ms_min'] / base['ms_min']
  record = {
    'model': 'mmoe (8 experts of 16, towers 8), 2 tasks, equal weighting',
    'dim': _DIM.value,
    'batch': _BATCH.value,
    'steps_per_call': _STEPS.value,
    'dense_features': NUM_DENSE,
    'categorical_columns': len(CENSUS_VOCABS) + 1,
    'goal': f'sparse: {large} rows <= {GOAL}x {small} rows (median)',
    'rows': results,
  }
  verdicts = [
    f'`{r["method"]}`: {large:,d} rows {r["x_median"]:.2f}x (min '
    f'{r["x_min"]:.2f}x) the {small:,d}-row step'
    + (
      f', goal {GOAL}x {"met" if r["x_median"] <= GOAL else "missed"}'
      if not r['method'].startswith('dense')
      else ''
    )
    for r in results
    if r['rows'] == large
  ]
  lines = [
    '## step: train step time against embedding rows',
    '',
    f'Census-like MMoE (8 experts of 16, towers 8, 2 tasks), {NUM_DENSE} '
    f'dense features and {len(CENSUS_VOCABS) + 1} categorical columns in '
    f'one table of `rows` x {_DIM.value} (28 census-sized columns, one id '
    f'column of uniform ids taking the other rows), batch {_BATCH.value}, '
    'equal weighting. `dense_adam`: optax.adam on every param (the dense '
    'table gradient); the others: Adam on the other params and the table '
    'updated sparsely (optimizer.sparse). State donated; '
    f'{_STEPS.value} steps per lax.scan call; ms per step, median and min '
    'over the timed calls; x: against the smallest table of the same '
    'optimizer; load: the 1-minute load average around the timed calls '
    '(2-core machine shared with other work). Sparse sizes timed '
    'round-robin, all resident.',
    '',
    *harness.markdown_table(
      [
        'optimizer',
        'rows',
        'ms/step median',
        'x',
        'ms/step min',
        'x',
        'load mean (max)',
        'in place',
      ],
      [
        [
          f'`{r["method"]}`',
          f'{r["rows"]:,d}',
          f'{r["ms_median"]:.2f}',
          f'{r["x_median"]:.2f}',
          f'{r["ms_min"]:.2f}',
          f'{r["x_min"]:.2f}',
          f'{r["load_mean"]:g} ({r["load_max"]:g})',
          'yes' if r['in_place'] else 'no',
        ]
        for r in results
      ],
      'lrrrrrrl',
    ),
    '',
    *[f'- {v}' for v in verdicts],
  ]
  return record, lines


def _line(r) -> str:
  return (
    f'{r["method"]:16s} rows {r["rows"]:>11,d}  {r["ms_median"]:9.2f} ms/step '
    f'(min {r["ms_min"]:.2f}), load {r["load_mean"]:g}, in place '
    f'{r["in_place"]}'
  )


PARTS = {'step': part_step, **scale_streaming.PARTS}


def main(argv):
  del argv
  unknown = [p for p in _PARTS.value if p not in PARTS]
  if unknown:
    raise SystemExit(
      f'--parts: unknown {", ".join(unknown)}; expected some of '
      f'{", ".join(PARTS)}'
    )
  record = {'parts': {}, 'load_average_start': _load()}
  lines = []
  for name in _PARTS.value:
    part_record, part_lines = PARTS[name]()
    record['parts'][name] = part_record
    lines += [*part_lines, '']
  record['load_average_end'] = _load()
  record['machine'] = harness.machine_facts()
  harness.write_results('scale_benchmark', record, lines, out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
