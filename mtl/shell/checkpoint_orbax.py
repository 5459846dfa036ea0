"""The orbax CheckpointManager as mtl sets it up (shell code).

`make_manager` opens one directory with two named items: `state` (the
TrainState, StandardSave, its arrays written uncompressed by
`StateHandler`; save and restore it with `SaveState` and `RestoreState`)
and `meta` (JSON). Retention is `KeepLatestAndCorrupt`
(mtl/shell/checkpoint_retention.py); orbax never cleans temporary
directories itself; each manager names its cross-process barriers apart.
"""

import orbax.checkpoint as ocp

from mtl.shell.checkpoint_retention import KeepLatestAndCorrupt


class StateHandler(ocp.StandardCheckpointHandler):
  """orbax's StandardCheckpointHandler (the same args and restore), its
  arrays written without zstd compression.

  Why (measured on a 384 MB state of random float32, 1M-row tables and
  their Adam moments, experiments/results/scale_streaming_50m_train.md):
  compressed, the save raised peak RSS by 354 MB (tensorstore holds each
  encoded chunk) and took 2.8 s; uncompressed, +5 MB and 0.9 s, and the
  files are as large (trained float32 barely compresses). The on-disk
  format is otherwise the same (zarr with the compressor recorded per
  array), so checkpoints written compressed by earlier versions restore.
  """

  def __init__(self):
    super().__init__()
    # StandardCheckpointHandler has no compression switch; its `_impl` is
    # the PyTreeCheckpointHandler it delegates to, made as it makes it.
    self._impl = ocp.PyTreeCheckpointHandler(use_compression=False)


# orbax finds an item's handler by its args' class: these are StandardSave
# and StandardRestore, registered with StateHandler.
@ocp.args.register_with_handler(StateHandler, for_save=True)
class SaveState(ocp.args.StandardSave):
  pass


@ocp.args.register_with_handler(StateHandler, for_restore=True)
class RestoreState(ocp.args.StandardRestore):
  pass


def make_manager(
  directory,
  *,
  max_to_keep: int | None,
  corrupt: set[int],
  async_save: bool,
  read_only: bool,
  barrier_prefix: str | None,
) -> ocp.CheckpointManager:
  """The manager of `directory` (an absolute path).

  Args:
    directory: the checkpoint directory.
    max_to_keep: good checkpoints kept, None: all.
    corrupt: the steps known corrupt (kept); the policy sees later additions.
    async_save: write in the background after the host copy.
    read_only: never write; else the directory is created.
    barrier_prefix: names this manager's cross-process barriers.
  """
  return ocp.CheckpointManager(
    directory,
    # Named handlers, so a fresh manager can read metadata before any save.
    item_handlers={
      'state': StateHandler(),
      'meta': ocp.JsonCheckpointHandler(),
    },
    options=ocp.CheckpointManagerOptions(
      preservation_policy=KeepLatestAndCorrupt(max_to_keep, corrupt),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=False,
      read_only=read_only,
      create=not read_only,
      # orbax names its cross-process barriers by step; a prefix per
      # manager keeps two managers saving the same step (the latest and
      # the best checkpoint at the last epoch) from meeting at each
      # other's barriers (seen: two processes hung, one in each save).
      multiprocessing_options=ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=barrier_prefix
      ),
    ),
  )
