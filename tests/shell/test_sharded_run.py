"""Training with embedding tables split by rows, through the command line.

A small generated scale table (mtl/data/scale.py: user and item ids, an item
history sharing the item table) on 8 emulated devices, its user_id and
item_id tables split by rows (--config.parallel.sharding.rows). Oracles:

- an uninterrupted sharded run: a SIGKILL mid-epoch and a rerun end bit for
  bit like it (final TrainState, metrics rows, results);
- the replicated run of the same config (every table whole on every device):
  the same evaluation numbers up to float32 rounding (duplicate ids' row
  gradients are summed in another order; tests/core/test_sharded_training.py
  holds the steps to bit equality where the order is the same);
- the saved state itself: read onto 4 devices and onto one (mtl-eval), the
  tables are the saved ones (tests/shell/test_sharded_checkpoint.py holds the
  relayout to bit equality).
"""

import json
import os
import pathlib
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from mtl.data.scale import write_scale_table
from tests import cli, forked

REPO = pathlib.Path(__file__).resolve().parents[2]
ROWS, BATCH, EPOCHS = 2048, 128, 2
SPE = ROWS // BATCH  # 16 steps an epoch.
SPLIT = "--config.parallel.sharding.rows=('item_id','user_id')"


@pytest.fixture(scope='module')
def scale_root(tmp_path_factory):
  sys.path.insert(0, str(REPO))
  from configs import scale

  root = tmp_path_factory.mktemp('scale')
  write_scale_table(
    scale.scale_dir(ROWS, root), rows=ROWS, num_users=200, num_items=300
  )
  return root


def args(workdir, *extra):
  return [
    f'--config=configs/scale.py:{ROWS}',
    f'--workdir={workdir}',
    '--config.input_mode=host',
    f'--config.batch_size={BATCH}',
    f'--config.eval_batch_size={BATCH}',
    f'--config.num_epochs={EPOCHS}',
    '--config.model.expert_hidden=(8,)',
    '--config.towers.hidden=(4,)',
    '--config.embedding.dim=4',
    '--config.optimizer.sparse.method=lazy_adam',
    '--config.optimizer.schedule=constant',
    '--config.parallel.num_devices=0',
    '--config.parallel.backend=shard_map',
    '--config.checkpoint.every_steps=8',
    '--config.progress_bar=false',
    *extra,
  ]


def env(scale_root, devices=8):
  e = dict(os.environ)
  e['MTL_SCALE_DIR'] = str(scale_root)
  flags = [
    f for f in e.get('XLA_FLAGS', '').split() if cli.DEVICE_COUNT_FLAG not in f
  ]
  e['XLA_FLAGS'] = ' '.join(
    flags + [f'{cli.DEVICE_COUNT_FLAG}={devices}']
  ).strip()
  return e


def train(scale_root, workdir, *extra, devices=8):
  proc = cli.run(
    args(workdir, *extra), env=env(scale_root, devices), timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def final_state(workdir):
  steps = sorted(
    int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()
  )
  return ocp.StandardCheckpointer().restore(
    workdir / 'checkpoints' / str(steps[-1]) / 'state'
  )


@pytest.fixture(scope='module')
def sharded(scale_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('sharded')
  proc = train(scale_root, workdir, SPLIT)
  return workdir, proc


def test_console_line_and_workdir_record_the_layout(sharded):
  workdir, proc = sharded
  lines = [x for x in proc.stderr.splitlines() if x.startswith('table ')]
  assert len(lines) == 2, proc.stderr[-3000:]
  assert lines[0].startswith('table item_id: ')
  assert 'split by rows over 8 devices (row i on device i mod 8)' in lines[0]
  record = json.loads((workdir / 'sharding.json').read_text())
  assert record['num_devices'] == 8
  tables = record['tables']
  assert tables['user_id']['sharding'] == 'rows'
  assert tables['category']['sharding'] == 'replicated'
  rows = tables['user_id']['rows']
  # lazy Adam: the table and two moments, float32, ceil(rows / 8) a device.
  want = -(-rows // 8) * tables['user_id']['dim'] * 4 * 3
  assert tables['user_id']['bytes_per_device'] == want
  # The checkpoint holds the blocks of 8 devices side by side.
  state = final_state(workdir)
  assert state['params']['embed']['user_id'].shape[0] == 8 * -(-rows // 8)


def test_sharded_run_evaluates_like_the_replicated_run(
  scale_root, sharded, tmp_path
):
  workdir, _ = sharded
  train(
    scale_root, tmp_path, "--config.optimizer.sparse.tables=('item_id',"
    "'user_id')",
  )  # fmt: skip
  got = json.loads((workdir / 'results.json').read_text())['test']
  want = json.loads((tmp_path / 'results.json').read_text())['test']
  assert got.keys() == want.keys()
  for k in got:
    # 32 steps of float32 sums in two orders; AUCs of 2% of the rows.
    assert abs(got[k] - want[k]) < 1e-4, (k, got[k], want[k])
  params = final_state(workdir)['params']['embed']
  other = final_state(tmp_path)['params']['embed']
  rows = other['user_id'].shape[0]
  blocks = params['user_id']
  n = 8
  r = blocks.shape[0] // n
  whole = np.swapaxes(blocks.reshape(n, r, -1), 0, 1).reshape(n * r, -1)
  np.testing.assert_allclose(whole[:rows], other['user_id'], atol=1e-5)


def test_resume_on_4_devices_and_eval_on_one(scale_root, sharded, tmp_path):
  workdir, _ = sharded
  # Epoch 1 on 8 devices, epoch 2 on 4: the checkpoint re-split on restore.
  train(scale_root, tmp_path, SPLIT, '--config.num_epochs=1')
  proc = train(scale_root, tmp_path, SPLIT, devices=4)
  assert f'resuming from step {SPE}' in proc.stderr
  result = json.loads((tmp_path / 'results.json').read_text())
  assert result['resumed_from_step'] == SPE
  record = json.loads((tmp_path / 'sharding.json').read_text())
  assert record['num_devices'] == 4
  # mtl-eval on one device reads the best checkpoint (epoch 1, written on 8
  # devices) whole: the validation numbers training logged for it on 8.
  proc = cli.run(
    [f'--workdir={tmp_path}'],
    env=env(scale_root, 1),
    module='mtl.shell.evaluate',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(
    (tmp_path / f'eval_validation_best_step{SPE}.json').read_text()
  )['metrics']
  rows = [json.loads(x) for x in open(tmp_path / 'metrics.jsonl')]
  logged = next(r for r in rows if r.get('val/epoch') == 1.0)
  for k, v in logged.items():
    if k.startswith('val/auc/'):  # Counts of the same logits: exact.
      assert got[k] == v, (k, got[k], v)
    elif k.startswith('val/') and k != 'val/epoch':  # Sums in another order.
      assert abs(got[k] - v) <= 1e-6 * abs(v), (k, got[k], v)


def test_unknown_table_is_one_line_and_writes_no_results(scale_root, tmp_path):
  proc = cli.run(
    args(tmp_path, "--config.parallel.sharding.rows=('user',)"),
    env=env(scale_root),
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[-1] == (
    "mtl-train: error: parallel.sharding.rows has 'user', expected names of "
    "the model's embedding tables: category, item_id, user_id"
  ), proc.stderr[-3000:]
  assert not {'results.json', 'config.json'} & {
    p.name for p in tmp_path.iterdir()
  }


def _committed(workdir):
  done = (workdir / 'checkpoints').glob('*/commit_success.txt')
  return sorted(int(p.parent.name) for p in done if p.parent.name.isdigit())


def test_sigkill_then_rerun_ends_like_an_uninterrupted_sharded_run(
  scale_root, sharded, tmp_path
):
  """Held at step 24 (its 24th stop check: host batches, one step a
  dispatch), just after its checkpoint was started, then SIGKILLed: the
  rerun resumes from the newest committed checkpoint and ends bit for bit
  like the uninterrupted run (`sharded`)."""
  reference, _ = sharded
  proc = forked.start(args(tmp_path, SPLIT), env(scale_root), hold_at=SPE + 8)
  try:
    assert 16 in _committed(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
  finally:
    proc.close()
  newest = _committed(tmp_path)[-1]
  assert newest in (16, 24)
  train(scale_root, tmp_path, SPLIT)
  result = json.loads((tmp_path / 'results.json').read_text())
  assert result['resumed_from_step'] == newest
  got, want = final_state(tmp_path), final_state(reference)
  for a, b in zip(_flat(got), _flat(want), strict=True):
    np.testing.assert_array_equal(a, b)
  assert (
    result['test']
    == json.loads((reference / 'results.json').read_text())['test']
  )

  def rows(w):
    every = [json.loads(x) for x in open(w / 'metrics.jsonl')]
    return [r for r in every if not any(k.startswith('test/') for k in r)]

  assert rows(tmp_path) == rows(reference)


def _flat(tree):
  import jax

  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_export_and_predict_read_the_split_tables_whole(
  scale_root, sharded, tmp_path
):
  """mtl-export on one device writes each split table whole: numpy's
  un-interleaving of the checkpoint's blocks (row i from block i mod 8, row
  i // 8). mtl-predict's validation outputs rank like training's logged
  validation AUC (sklearn's exact AUC against its binned one)."""
  from sklearn.metrics import roc_auc_score

  workdir, _ = sharded
  out = tmp_path / 'export'
  proc = cli.run(
    [f'--workdir={workdir}', f'--out={out}'],
    env=env(scale_root, 1),
    module='mtl.shell.export',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  exported = np.load(out / 'params.npz')
  best = sorted((workdir / 'checkpoints_best').iterdir())[-1]
  blocks = ocp.StandardCheckpointer().restore(best / 'state')['params']
  for name in ('item_id', 'user_id'):
    b = np.asarray(blocks['embed'][name])
    r = b.shape[0] // 8
    whole = b.reshape(8, r, -1).transpose(1, 0, 2).reshape(8 * r, -1)
    v = json.loads((workdir / 'sharding.json').read_text())['tables'][name]
    want = whole[: v['rows']]
    matches = [k for k in exported.files if exported[k].shape == want.shape]
    assert any(np.array_equal(exported[k], want) for k in matches), name
  # Predictions of the validation file (the split's rows) on one device.
  from configs import scale

  valid = scale.scale_dir(ROWS, scale_root) / 'validation.parquet'
  preds = tmp_path / 'preds.csv'
  proc = cli.run(
    [
      f'--workdir={workdir}',
      f'--input={valid}',
      f'--output={preds}',
      '--keep=ts',
    ],
    env=env(scale_root, 1),
    module='mtl.shell.predict',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  import pandas as pd

  got = pd.read_csv(preds)
  labels = pd.read_parquet(valid)['click']
  auc = roc_auc_score(labels, got['click'])
  rows = [json.loads(x) for x in open(workdir / 'metrics.jsonl')]
  logged = next(r for r in rows if r.get('val/epoch') == 1.0)
  assert abs(auc - logged['val/auc/click']) < 2e-3, (auc, logged)
