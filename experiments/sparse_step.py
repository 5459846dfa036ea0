"""One embedding-table update: sparse (mtl/core/sparse.py) against dense Adam.

  python experiments/sparse_step.py [--rows=1e4,1e5,1e6,1e7] [--dim=16]
      [--ids=1024] [--steps=16] [--repeats=5]

For a table [rows, dim] and `--ids` uniformly drawn ids per step with their
row gradients given, one optimizer step of:

  dense_adam       the dense [rows, dim] gradient (scatter-add of the row
                   gradients, what `jax.grad` of the gather makes) and
                   optax.adam on the whole table: today's path;
  lazy_adam        sparse.lazy_adam: combine, then the touched rows only;
  rowwise_adagrad  sparse.rowwise_adagrad (one accumulator per row).

Two timings, the table and optimizer state donated (updated in place):
'dispatch', one jitted step per call (dispatch overhead included); 'scan',
`--steps` steps in one `lax.scan` per call, ms per step. Median of
`--repeats` timed calls after one warm-up (compilation) call. Writes
experiments/results/sparse_step.json and .md (or --out). Goal:
the 1e7-row step within 1.5x the 1e4-row step with sparse updates.
"""

import pathlib
import statistics
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ and experiments/

from experiments import harness  # noqa: E402

_ROWS = flags.DEFINE_list('rows', ['1e4', '1e5', '1e6', '1e7'], 'Table rows.')
_DIM = flags.DEFINE_integer('dim', 16, 'Embedding width.')
_IDS = flags.DEFINE_integer('ids', 1024, 'Ids looked up per step.')
_STEPS = flags.DEFINE_integer('steps', 16, 'Steps per scanned call.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls, dense.')
_SPARSE_REPEATS = flags.DEFINE_integer(
  'sparse_repeats', 50, 'Timed calls, sparse (round-robin over sizes).'
)
_METHODS = flags.DEFINE_list(
  'methods', ['dense_adam', 'lazy_adam', 'rowwise_adagrad'], 'Methods.'
)
harness.define_flags(out='sparse_step')
FLAGS = flags.FLAGS
GOAL = 1.5


def make_step(method: str):
  """step(table, state, ids, grads, step) -> (table, state); and its init."""
  import jax.numpy as jnp
  import optax

  from mtl.core import sparse

  if method == 'dense_adam':
    tx = optax.adam(1e-3)

    def step(table, state, ids, grads, i):
      del i  # optax counts its own steps.
      dense = jnp.zeros_like(table).at[ids].add(grads)
      updates, state = tx.update(dense, state, table)
      return optax.apply_updates(table, updates), state

    return step, tx.init
  opt = sparse.SPARSE_OPTIMIZERS[method](1e-3)

  def step(table, state, ids, grads, i):
    return opt.apply(table, state, ids, grads, step=i)

  return step, opt.init


class Timed:
  """One method on one table size: compiled, warmed up, its state threaded."""

  def __init__(self, method: str, rows: int, dim: int, data):
    import jax
    import jax.numpy as jnp
    from jax import lax

    step, init = make_step(method)
    self.method, self.rows, self.data = method, rows, data
    self.table = jax.random.normal(jax.random.key(0), (rows, dim), jnp.float32)
    self.state = init(self.table)
    self.steps = data[0].shape[0]

    def one(table, state, ids, grads):
      return step(table, state, ids[0], grads[0], jnp.int32(0))

    def scanned(table, state, ids, grads):
      def body(carry, xs):
        i, ids_i, grads_i = xs
        return step(*carry, ids_i, grads_i, i), None  # i: the global step.

      steps = jnp.arange(ids.shape[0], dtype=jnp.int32)
      carry, _ = lax.scan(body, (table, state), (steps, ids, grads))
      return carry

    self.fns = {
      'dispatch': jax.jit(one, donate_argnums=(0, 1)),
      'scan': jax.jit(scanned, donate_argnums=(0, 1)),
    }
    self.times = {'dispatch': [], 'scan': []}
    pointer = self.table.unsafe_buffer_pointer()
    for mode in self.fns:  # Compile and warm up.
      self.call(mode, record=False)
    self.in_place = self.table.unsafe_buffer_pointer() == pointer

  def call(self, mode: str, record: bool = True) -> None:
    import jax

    per = 1 if mode == 'dispatch' else self.steps
    t0 = time.perf_counter()
    self.table, self.state = jax.block_until_ready(
      self.fns[mode](self.table, self.state, *self.data)
    )
    if record:
      self.times[mode].append((time.perf_counter() - t0) / per * 1e3)

  def result(self) -> dict:
    out = {'method': self.method, 'rows': self.rows}
    for mode, times in self.times.items():
      out[f'ms_{mode}_median'] = statistics.median(times)
      out[f'ms_{mode}_min'] = min(times)
    out['in_place'] = bool(self.in_place)
    out['repeats'] = len(self.times['scan'])
    return out

  def close(self) -> None:
    del self.table, self.state


def data_for(rows: int, steps: int, n: int, dim: int):
  import jax
  import numpy as np

  rng = np.random.default_rng(rows)
  return jax.device_put(
    (
      rng.integers(0, rows, (steps, n)).astype(np.int32),
      rng.normal(size=(steps, n, dim)).astype(np.float32),
    )
  )


def main(argv):
  del argv

  dim, n, steps = _DIM.value, _IDS.value, _STEPS.value
  sizes = [int(float(r)) for r in _ROWS.value]
  results = []
  # Dense: one size at a time (its cost dwarfs the machine's noise).
  for method in [m for m in _METHODS.value if m.startswith('dense')]:
    for rows in sizes:
      t = Timed(method, rows, dim, data_for(rows, steps, n, dim))
      for _ in range(_REPEATS.value):
        for mode in t.fns:
          t.call(mode)
      results.append(t.result())
      t.close()
  # Sparse: every size resident, timed round-robin, so that the load of
  # this shared machine hits every size alike.
  runs = [
    Timed(method, rows, dim, data_for(rows, steps, n, dim))
    for method in _METHODS.value
    if not method.startswith('dense')
    for rows in sizes
  ]
  for _ in range(_SPARSE_REPEATS.value):
    for t in runs:
      for mode in t.fns:
        t.call(mode)
  results += [t.result() for t in runs]
  for r in results:
    print(
      f'{r["method"]:16s} rows {r["rows"]:>10,d}  dispatch '
      f'{r["ms_dispatch_median"]:9.3f} ms (min {r["ms_dispatch_min"]:.3f})  '
      f'scan {r["ms_scan_median"]:9.3f} (min {r["ms_scan_min"]:.3f}) ms/step'
      f'  in place {r["in_place"]}',
      flush=True,
    )
  rows_out = results
  small = min(sizes)
  for r in rows_out:
    base = next(
      b for b in rows_out if b['method'] == r['method'] and b['rows'] == small
    )
    for key in ('dispatch_median', 'dispatch_min', 'scan_median', 'scan_min'):
      r[f'x_{key}'] = r[f'ms_{key}'] / base[f'ms_{key}']
  record = {
    'dim': dim,
    'ids_per_step': n,
    'steps_per_scan': steps,
    'goal': f'sparse: {max(sizes)} rows <= {GOAL}x {small} rows',
    'rows': rows_out,
    'machine': harness.machine_facts(),
  }
  lines = [
    f'One table update, dim {dim}, {n} uniform ids per step (row gradients '
    'given); table and optimizer state donated (updated in place: the output '
    'buffer is the input buffer). ms per step, median and min of the timed '
    f'calls: one jitted step per call (dispatch), {steps} steps in one '
    f'lax.scan (scan). x: against the {small:,d}-row table of the same '
    f'method. Goal: sparse {max(sizes):,d} rows <= {GOAL}x {small:,d} rows. '
    'Sparse sizes were timed round-robin, all tables resident.',
    '',
    *harness.markdown_table(
      [
        'method',
        'rows',
        'dispatch ms',
        'x',
        'scan ms/step',
        'x',
        'scan min',
        'x',
        'in place',
      ],
      [
        [
          f'`{r["method"]}`',
          f'{r["rows"]:,d}',
          f'{r["ms_dispatch_median"]:.3f}',
          f'{r["x_dispatch_median"]:.2f}',
          f'{r["ms_scan_median"]:.3f}',
          f'{r["x_scan_median"]:.2f}',
          f'{r["ms_scan_min"]:.3f}',
          f'{r["x_scan_min"]:.2f}',
          'yes' if r['in_place'] else 'no',
        ]
        for r in rows_out
      ],
      'lrrrrrrrl',
    ),
  ]
  harness.write_results('sparse_step', record, lines, out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
