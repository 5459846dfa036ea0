"""Data-parallel train and eval steps over a 1-D device mesh.

The step bodies of `mtl.core.train_step` are written per shard: built with
`axis_name='data'`, they `psum` counts, losses, gradients and eval counts over
that axis, so every shard sees the full-batch quantities. This module runs such
a body on several devices, two ways (`BACKENDS`):

- 'pmap': `jax.pmap(body, axis_name)`, the batch split on a leading device
  axis (`shard_batch`);
- 'shard_map': `jax.jit(jax.shard_map(body, mesh=Mesh(devices, ('data',))))`,
  the batch a global array split over the mesh, the form that later grows a
  'model' axis for sharded embedding tables.

Either way the caller passes an ordinary `TrainState` (or params) and the same
numpy batch in the usual layout (`labels`/`mask` [T, B], the rest [B, ...]);
the state comes back replicated on the devices as a global array, usable like a
single-device state (checkpointing, eval, another step). Metrics come back
replicated too: they are `psum`med inside.

Several processes: each passes its LOCAL slice of the global batch (its rows,
in the same layout); the mesh spans the global devices. Nothing here asks for
`jax.process_index()`.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mtl.errors import ConfigError, did_you_mean

BACKENDS = ('pmap', 'shard_map')
AXIS_NAME = 'data'
# The batch axis of each key of a batch; any other key has it first.
BATCH_AXIS = {'labels': 1, 'mask': 1}


def check_backend(backend: str) -> None:
  """One-line ValueError naming `BACKENDS` on an unknown backend."""
  if backend not in BACKENDS:
    hint = did_you_mean(backend, BACKENDS)
    raise ConfigError(
      f'unknown parallel backend {backend!r}: expected one of '
      f'{", ".join(BACKENDS)}{hint}'
    )


def check_divisible(
  global_batch: int, num_devices: int, what: str = 'batch_size'
) -> None:
  """One-line ValueError unless `global_batch` splits evenly over devices."""
  if num_devices < 1 or global_batch % num_devices:
    raise ConfigError(
      f'{what} {global_batch} is not divisible by the {num_devices} devices; '
      f'use a multiple of {num_devices}'
    )


def _axis(key: str) -> int:
  return BATCH_AXIS.get(key, 0)


def batch_rows(batch) -> int:
  """The number of rows (examples) of a batch in the usual layout."""
  sizes = {k: np.shape(v)[_axis(k)] for k, v in batch.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f'batch arrays disagree on the number of rows: {sizes}')
  return next(iter(sizes.values()))


def shard_batch(batch, num_devices: int, what: str = 'batch_size'):
  """[B, ...] -> [D, B/D, ...] (labels/mask [T, B] -> [D, T, B/D]), numpy."""
  rows = batch_rows(batch)
  check_divisible(rows, num_devices, what)

  def split(key, x):
    x = np.asarray(x)
    a = _axis(key)
    # Explicit sizes: a [B, 0] array (no sparse features) cannot infer -1.
    shape = x.shape[:a] + (num_devices, rows // num_devices) + x.shape[a + 1 :]
    return np.moveaxis(x.reshape(shape), a, 0)

  return {k: split(k, v) for k, v in batch.items()}


def unshard_batch(batch):
  """The inverse of `shard_batch`."""

  def join(key, x):
    x = np.moveaxis(np.asarray(x), 0, _axis(key))
    a = _axis(key)
    rows = x.shape[a] * x.shape[a + 1]
    return x.reshape(x.shape[:a] + (rows,) + x.shape[a + 2 :])

  return {k: join(k, v) for k, v in batch.items()}


def replicate(tree, devices: Sequence[jax.Device]):
  """Every leaf stacked [D, ...], one copy per device: the classic pmap form.

  `jax.pmap(f)(replicate(x, devices))` gives each device its own copy of x.
  """
  mesh = make_mesh(devices)
  sharding = NamedSharding(mesh, P(AXIS_NAME))

  def put(x):
    x = jnp.asarray(x)
    return jax.device_put(
      jnp.broadcast_to(x, (len(devices),) + x.shape), sharding
    )

  return jax.tree.map(put, tree)


def unreplicate(tree):
  """The first copy of every leaf of a `replicate`d (or pmap output) tree."""
  return jax.tree.map(lambda x: x[0], tree)


def make_mesh(
  devices: Sequence[jax.Device] | None = None, axis_name: str = AXIS_NAME
) -> Mesh:
  """A 1-D mesh over `devices` (default: all global devices), Auto axis."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (axis_name,), axis_types=(AxisType.Auto,))


def batch_specs(batch, axis_name: str = AXIS_NAME):
  """PartitionSpecs splitting each array of a batch on its batch axis."""
  return {k: P(*([None] * _axis(k) + [axis_name])) for k in batch}


def _put_replicated(x, sharding: NamedSharding):
  if (
    isinstance(x, jax.Array)
    and x.sharding != sharding
    and x.is_fully_addressable
    and not sharding.is_fully_addressable
  ):
    # device_put refuses a committed local array for a multi-process sharding.
    devices = sharding.addressable_devices_indices_map(x.shape)  # In order.
    copies = [jax.device_put(x, d) for d in devices]
    return jax.make_array_from_single_device_arrays(x.shape, sharding, copies)
  return jax.device_put(x, sharding)


def _put(x, sharding: NamedSharding):
  """x placed with `sharding`; a host array split or copied to this
  process's devices (each process passes the same whole array)."""
  if sharding.spec == P():
    return _put_replicated(x, sharding)
  if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
    return x  # Never a copy: the state is donated, a copy would double it.
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


class _Parallel:
  """Shared machinery: a mesh, state placement and batch placement."""

  def __init__(
    self, body, *, backend, devices, axis_name, donate, state_specs=None
  ):
    check_backend(backend)
    if state_specs is not None and backend != 'shard_map':
      raise ConfigError(
        f'embedding tables sharded by rows need parallel.backend='
        f"'shard_map', found {backend!r}"
      )
    # state -> PartitionSpecs (sharded tables: mtl/core/sharded_tables.py);
    # None: the state is replicated.
    self._state_specs = state_specs
    self.backend = backend
    self.axis_name = axis_name
    self.mesh = make_mesh(devices, axis_name)
    self.num_devices = self.mesh.devices.size
    self.num_local_devices = len(self.mesh.local_devices)
    self._replicated = NamedSharding(self.mesh, P())
    donate_argnums = (0,) if donate else ()
    if backend == 'pmap':
      # in_axes/out_axes None: the state goes in and comes out as one global
      # array replicated over the devices, exactly like the shard_map form.
      self._fn = jax.pmap(
        body,
        axis_name=axis_name,
        in_axes=(None, 0),
        out_axes=None,
        devices=list(self.mesh.devices.flat),
        donate_argnums=donate_argnums,
      )
      self._specs = None
    else:
      self._fn = None
      self._body = body
      self._donate = donate_argnums
      self._specs = {}

  def _of_state(self, state):
    if self._state_specs is None:
      return P()
    return self._state_specs(state)

  def _shard_mapped(self, batch, state=None):
    key = (tuple(sorted(batch)), jax.tree.structure(state))
    if key not in self._specs:
      specs = batch_specs(batch, self.axis_name)
      state_specs = self._of_state(state)
      out = P()
      if self._donate and self._state_specs is not None:
        out = (state_specs, P())  # The train step: (state, metrics).
      fn = jax.shard_map(
        self._body,
        mesh=self.mesh,
        in_specs=(state_specs, specs),
        out_specs=out,
        # The step body is written pmap-style: it psums gradients itself.
        # With vma checking on, the transpose of the implicit pvary of the
        # replicated params would psum them too (measured: losses off by
        # 5%), and the invariant `weights` cotangent would need a pcast. One
        # body for both backends wants the check off; the tests compare
        # both with one device.
        check_vma=False,
      )
      self._specs[key] = (specs, jax.jit(fn, donate_argnums=self._donate))
    return self._specs[key]

  def put_state(self, tree):
    """Replicates a tree over the mesh (a no-op when it already is).

    With several processes each passes its own copy of the same tree (same
    seed); a process's committed local arrays are copied to its devices.
    """
    if self._state_specs is None:
      return jax.tree.map(lambda x: _put_replicated(x, self._replicated), tree)
    return jax.tree.map(
      lambda x, spec: _put(x, NamedSharding(self.mesh, spec)),
      tree,
      self._state_specs(tree),
    )

  def put_batch(self, batch):
    """This process's rows of the global batch, placed on its devices.

    pmap: [local D, B_local / local D, ...]; shard_map: global arrays split
    over the mesh on each key's batch axis.
    """
    rows = batch_rows(batch)
    check_divisible(rows, self.num_local_devices)
    if self.backend == 'pmap':
      return shard_batch(batch, self.num_local_devices)
    specs = batch_specs(batch, self.axis_name)
    out = {}
    for k, x in batch.items():
      x = np.asarray(x)
      shape = list(x.shape)
      shape[_axis(k)] = rows * (self.num_devices // self.num_local_devices)
      sharding = NamedSharding(self.mesh, specs[k])
      out[k] = jax.make_array_from_process_local_data(sharding, x, tuple(shape))
    return out

  def __call__(self, state, batch):
    return self.on_placed(state, self.put_batch(batch))

  def on_placed(self, state, placed_batch):
    """Like calling, with a batch `put_batch` placed ahead of time."""
    state = self.put_state(state)
    if self.backend == 'pmap':
      return self._fn(state, placed_batch)
    _, fn = self._shard_mapped(placed_batch, state)
    return fn(state, placed_batch)


def make_parallel_train_step(
  step: Callable,
  *,
  backend: str = 'pmap',
  devices: Sequence[jax.Device] | None = None,
  axis_name: str = AXIS_NAME,
  state_specs: Callable | None = None,
) -> Callable:
  """Runs a per-shard train step data-parallel over `devices`.

  Args:
    step: `step(state, batch) -> (state, metrics)` from
      `train_step.make_train_step(..., axis_name=axis_name)`.
    backend: one of `BACKENDS`.
    devices: the devices of the 1-D mesh (default: all global devices).
    axis_name: the axis name `step` reduces over.
    state_specs: state -> its PartitionSpecs, for a state with leaves split
      over the axis (embedding tables sharded by rows,
      `sharded_tables.specs`; 'shard_map' only); None: replicated.

  Returns:
    `run(state, batch) -> (state, metrics)`: `state` an ordinary TrainState
    (donated), `batch` this process's rows of the global batch in the usual
    numpy layout. The new state and the metrics are replicated global arrays.
    `run.put_state`/`run.put_batch` place them ahead of time (then call
    `run.on_placed(state, placed_batch)`), `run.mesh` is the mesh.

  Raises:
    ValueError: on an unknown backend, and (when called) on a batch whose
      rows do not split evenly over the devices.
  """
  return _Parallel(
    step,
    backend=backend,
    devices=devices,
    axis_name=axis_name,
    donate=True,
    state_specs=state_specs,
  )


def make_parallel_eval_step(
  eval_step: Callable,
  *,
  backend: str = 'pmap',
  devices: Sequence[jax.Device] | None = None,
  axis_name: str = AXIS_NAME,
  state_specs: Callable | None = None,
) -> Callable:
  """Runs a per-shard eval step data-parallel over `devices`.

  Args:
    eval_step: `eval_step(params, batch) -> counts` from
      `train_step.make_eval_step(..., axis_name=axis_name)`.
    backend: one of `BACKENDS`.
    devices: the devices of the 1-D mesh (default: all global devices).
    axis_name: the axis name `eval_step` reduces over.
    state_specs: params -> their PartitionSpecs (see the train step's).

  Returns:
    `run(params, batch) -> counts`, the counts of the whole global batch
    (replicated), equal to the single-device counts; params are not donated.
    To evaluate a whole split in one dispatch, pass `make_scanned_eval(
    eval_step, batch_size=eval_batch_size // num_devices)` as `eval_step`
    and a split padded to `eval_batch_size` rows (placed once with
    `run.put_batch`, then `run.on_placed(params, placed_split)`).
  """
  return _Parallel(
    eval_step,
    backend=backend,
    devices=devices,
    axis_name=axis_name,
    donate=False,
    state_specs=state_specs,
  )
