"""Using what was trained: mtl-eval, mtl-predict, mtl-export,
mtl/serving.py, mtl-report and the preprocessing artefact.

Tiny runs, trained once per module in this process: census MMoE (real data,
1 epoch of 24 steps) and a population of two ESMMs on entire_space (a
funnel: click, ctcvr, conversion on clicks, cvr over all impressions).
Oracles: results.json (written by the trainer's own evaluation), the eval
step's forward pass, scikit-learn, metrics.jsonl.
"""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from configs import entire_space as es_config
from configs import smoke
from mtl.core import tasks as tasks_lib
from mtl.core import train_step
from mtl.data import census_income_builder as cib
from mtl.data import preprocessing
from mtl.shell import (
  build,
  evaluate,
  export,
  predict,
  report,
  restore,
  restored_config,
  trainer,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


def _train(config, workdir):
  trainer.train(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def census(tmp_path_factory, census_tfds_dir):
  config = smoke.get_config('mmoe,census')
  config.dataset.data_dir = str(census_tfds_dir)
  config.update(
    dict(
      batch_size=8192,
      num_epochs=1,
      eval_batch_size=16384,
      steps_per_dispatch=8,
      log_every_steps=4,
      diagnostics_every_steps=8,
    )
  )
  return _train(config, tmp_path_factory.mktemp('census') / 'w')


@pytest.fixture(scope='module')
def esmm(tmp_path_factory):
  """Two ESMM members (seeds 0 and 1) in one population."""
  config = es_config.get_config('esmm')
  config.dataset.update(
    dict(n_train=2048, n_validation=1024, n_test=1024, num_items=100)
  )
  # One hidden layer a network, not 64-32 and 16: fewer parameters for the
  # population's (eager) init to compile, the same funnel and outputs.
  config.model.hidden, config.towers.hidden = (8,), (8,)
  config.update(
    dict(
      batch_size=512,
      num_epochs=2,
      eval_batch_size=512,
      log_every_steps=4,
      progress_bar=False,
    )
  )
  config.population.size = 2
  return _train(config, tmp_path_factory.mktemp('esmm') / 'w')


def _results(workdir):
  return json.loads((workdir / 'results.json').read_text())


def _forward(workdir, split_arrays, which='default', logits=False):
  """The eval step's per-row outputs: its forward pass (train=False, each
  task on its head row), then sigmoid for binary tasks."""
  run = restore.open_run(workdir)
  params, _ = restore.restore_params(run, which)
  if run.is_population:  # The first member.
    params = jax.tree.map(lambda x: x[0], params)
  z = run.model.apply(
    {'params': params}, train_step.features_of(split_arrays), train=False
  )[np.asarray(tasks_lib.head_rows(run.tasks))]
  if logits:
    return np.asarray(z, np.float64), run
  binary = np.array([t.kind == 'binary' for t in run.tasks])[:, None]
  return np.where(binary, jax.nn.sigmoid(z), z), run


def test_eval_reproduces_results_exactly(census):
  results = _results(census)
  for split, key in (('validation', 'validation'), ('test', 'test')):
    out = evaluate.evaluate(census, split=split)
    assert out['checkpoint'].endswith('checkpoints_best')
    for name, value in results[key].items():
      assert out['metrics'][name] == value, name  # Bit for bit.
    written = json.loads(pathlib.Path(out['file']).read_text())
    assert out['file'] == str(
      census / f'eval_{split}_best_step{out["step"]}.json'
    )
    assert written['metrics'] == out['metrics']
  m = out['metrics']
  for task in ('income', 'marital'):
    assert 0 <= m[f'test/ece/{task}'] < 0.5
    bins = out['calibration'][task]
    assert sum(b['count'] for b in bins) == out['rows']
  # The rates the calibration compares come from the split's labels.
  assert m['test/observed_rate/income'] == pytest.approx(0.062, abs=0.01)


def test_eval_of_a_population_per_member(esmm):
  out = evaluate.evaluate(esmm, split='test')
  results = _results(esmm)['members']
  assert [r['member'] for r in out['members']] == [r['member'] for r in results]
  for r, e in zip(results, out['members'], strict=True):
    assert {k: e['metrics'][k] for k in r['test']} == r['test']
    assert 0 < e['metrics']['test/ece/ctcvr'] < 0.5
    own = esmm / 'members' / r['member'] / pathlib.Path(out['file']).name
    assert json.loads(own.read_text())['metrics'] == e['metrics']


def _census_rows(census, data_dir, n_raw=2000):
  """Raw UCI rows of the validation split (its first ones) and the encoded
  validation rows they are."""
  ds = build.load_dataset(restored_config.read_config(census))
  n_test = ds.num_rows('validation') + ds.num_rows('test')
  perm = np.random.default_rng(0).permutation(n_test)  # census_income.py
  val_rows = np.sort(perm[: n_test // 2])
  val_rows = val_rows[val_rows < n_raw]
  raw = pd.read_csv(
    data_dir / 'census-income-kdd' / 'census-income.test.gz',
    header=None,
    names=cib.COLUMNS,
    nrows=n_raw,
    dtype=str,
    keep_default_na=False,
    skipinitialspace=True,
  ).iloc[val_rows]
  n = len(val_rows)
  v = ds.splits['validation']
  split = {'dense': v['dense'][:n], 'sparse': v['sparse'][:n]}
  split.update(labels=v['labels'][:, :n], mask=v['mask'][:, :n])
  return raw, split


@pytest.fixture(scope='module')
def census_rows(census, data_dir, tmp_path_factory):
  raw, split = _census_rows(census, data_dir)
  path = tmp_path_factory.mktemp('rows') / 'rows.csv'
  raw.to_csv(path, index=False)
  return path, raw, split


def test_predict_equals_the_eval_step(census, census_rows, tmp_path):
  path, raw, split = census_rows
  out = tmp_path / 'preds.parquet'
  n = predict.predict(census, path, out, batch_size=1000)
  assert n == len(raw)
  preds = pd.read_parquet(out)
  want, run = _forward(census, split)
  assert list(preds.columns) == [t.name for t in run.tasks]
  diff = np.abs(preds.to_numpy().T - np.asarray(want)).max()
  assert diff <= 1e-6, diff
  # The raw UCI form: no header line, no .csv in its name, gzipped.
  uci = tmp_path / 'census-income.rows.gz'
  raw.iloc[:50].to_csv(uci, header=False, index=False)
  predict.predict(census, uci, tmp_path / 'uci.csv', keep=('age',))
  again = pd.read_csv(tmp_path / 'uci.csv')
  assert list(again.columns) == ['age', 'income', 'marital']
  np.testing.assert_allclose(
    again[['income', 'marital']], preds[:50], atol=1e-6
  )


def test_eval_on_a_file_of_rows(census, census_rows):
  path, raw, split = census_rows
  out = evaluate.evaluate(census, split=str(path))
  assert pathlib.Path(out['file']).name.startswith('eval_rows_best_step')
  assert pathlib.Path(out['file']).exists() and out['rows'] == len(raw)
  z, run = _forward(census, split, logits=True)
  for t, task in enumerate(run.tasks):
    y = split['labels'][t]
    loss = np.mean(np.logaddexp(0, z[t]) - y * z[t])  # BCE of the logits.
    m = out['metrics']
    assert m[f'eval/logloss/{task.name}'] == pytest.approx(loss, rel=1e-5)
    auc = metrics.roc_auc_score(y, z[t])
    assert m[f'eval/auc/{task.name}'] == pytest.approx(auc, abs=1e-4)
    rate = out['calibration'][task.name]
    assert sum(b['count'] for b in rate) == len(raw)


def test_unseen_categories_get_the_oov_id(census, census_rows):
  _, raw, split = census_rows
  run = restore.open_run(census)
  enc = preprocessing.Encoder(run.artefact)
  rows = raw.iloc[:5].reset_index(drop=True).copy()
  x = enc.features(rows, 0, 'rows')
  np.testing.assert_array_equal(x['sparse'], split['sparse'][:5])
  np.testing.assert_allclose(x['dense'], split['dense'][:5], rtol=0, atol=0)
  rows['class_of_worker'] = 'Astronaut'
  col = run.artefact['sparse_names'].index('class_of_worker')
  assert (enc.features(rows, 0, 'rows')['sparse'][:, col] == 0).all()


def _serve(tmp_path, jobs):
  """Runs mtl/serving.py in a fresh process on `jobs`; its outputs."""
  script = """
import json, sys
import numpy as np, pandas as pd
from mtl import serving
jobs = json.loads(sys.argv[1])
out = {}
for name, job in jobs.items():
  model = serving.load(job['dir'])
  x = np.load(job['encoded'])
  for b in job['batches']:
    y = model.predict(x['dense'][:b], x['sparse'][:b])
    out[f'{name}/encoded/{b}'] = np.stack([y[t] for t in model.tasks]).tolist()
  if job.get('checks'):
    y = model.predict(x['dense'][:0], x['sparse'][:0])
    out[f'check:{name}/empty'] = [len(y[t]) for t in model.tasks]
    for i, value in enumerate((10**6, -1)):
      bad = x['sparse'][:3].copy()
      bad[1, 2] = value
      try:
        model.predict(x['dense'][:3], bad)
        out[f'check:{name}/bad{i}'] = 'no error'
      except ValueError as e:
        out[f'check:{name}/bad{i}'] = str(e)
  if job.get('rows'):
    rows = pd.read_csv(job['rows'], dtype=str, keep_default_na=False)
    for b in job['batches']:
      y = model.predict_rows(rows.iloc[:b])
      out[f'{name}/rows/{b}'] = np.stack([y[t] for t in model.tasks]).tolist()
shell = sorted(m for m in sys.modules if m.startswith('mtl.shell'))
assert not shell, shell
print(json.dumps(out))
"""
  proc = subprocess.run(
    [sys.executable, '-c', script, json.dumps(jobs)],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout)
  return {
    k: v if k.startswith('check:') else np.asarray(v) for k, v in out.items()
  }


def test_exported_function_in_a_fresh_process(
  census, census_rows, esmm, tmp_path
):
  path, raw, census_split = census_rows
  es_ds = build.load_dataset(restored_config.read_config(esmm))
  es_split = {k: es_ds.splits['test'][k][:300] for k in ('dense', 'sparse')}
  es_rows = tmp_path / 'es_rows.csv'  # Already encoded: columns by name.
  frame = pd.DataFrame(es_split['dense'], columns=es_ds.dense_names)
  frame[es_ds.sparse_names[0]] = es_split['sparse'][:, 0]
  frame.to_csv(es_rows, index=False)
  jobs, want = {}, {}
  for name, workdir, split, rows in (
    ('census', census, census_split, path),
    ('esmm', esmm, es_split, es_rows),
  ):
    sig = export.export(workdir, tmp_path / name)
    assert sig['platforms'] == ['cpu', 'cuda', 'tpu']
    members = sig['members'] and sorted((tmp_path / name / 'members').iterdir())
    assert sig['members'] is None or len(members) == 2
    encoded = tmp_path / f'{name}.npz'
    np.savez(encoded, dense=split['dense'], sparse=split['sparse'])
    jobs[name] = {
      'dir': str(tmp_path / name),
      'encoded': str(encoded),
      'rows': str(rows),
      'batches': [7, 300],
      'checks': name == 'census',
    }
    want[name] = np.asarray(_forward(workdir, split)[0])
  got = _serve(tmp_path, jobs)
  # An empty batch has empty outputs; an id outside its column's table (it
  # would gather NaN) or a negative one is a ValueError naming the column.
  assert got.pop('check:census/empty') == [0, 0]
  column = restore.open_run(census).artefact['sparse_names'][2]
  for i, value in enumerate((10**6, -1)):
    message = got.pop(f'check:census/bad{i}')
    assert f"sparse column '{column}' holds id {value} at row 1" in message
  diffs = {}
  for key, y in got.items():
    name, _, b = key.split('/')
    diffs[key] = float(np.abs(y - want[name][:, : int(b)]).max())
  assert len(diffs) == 8 and max(diffs.values()) <= 1e-6, diffs


def test_predict_of_a_population(esmm, tmp_path):
  ds = build.load_dataset(restored_config.read_config(esmm))
  test = {k: ds.splits['test'][k][:40] for k in ('dense', 'sparse')}
  rows = pd.DataFrame(test['dense'], columns=ds.dense_names)
  rows[ds.sparse_names[0]] = test['sparse'][:, 0]
  rows.to_csv(tmp_path / 'rows.csv', index=False)
  predict.predict(esmm, tmp_path / 'rows.csv', tmp_path / 'p.parquet')
  preds = pd.read_parquet(tmp_path / 'p.parquet')
  members = [r['member'] for r in _results(esmm)['members']]
  tasks = _results(esmm)['members'][0]['tasks']
  assert list(preds.columns) == [f'{t}/{m}' for m in members for t in tasks]
  want, _ = _forward(esmm, test)  # The first member.
  first = preds[[f'{t}/{members[0]}' for t in tasks]].to_numpy().T
  assert np.abs(first - np.asarray(want)).max() <= 1e-6


def test_report_of_a_single_run(census):
  written = report.report(census)
  assert set(written) == {'training', 'weights', 'gates', 'grad_cosines'}
  for p in written.values():
    assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  series = json.loads((census / 'report' / 'series.json').read_text())
  rows = [
    json.loads(line)
    for line in (census / 'metrics.jsonl').read_text().splitlines()
  ]
  for panels in series['figures'].values():
    for lines in panels.values():
      for s in lines.values():
        logged = [(r['step'], r[s['key']]) for r in rows if s['key'] in r]
        assert list(zip(s['steps'], s['members'][0], strict=True)) == logged
  gates = series['figures']['gates']
  assert set(gates) == {'moe / income', 'moe / marital'}
  assert set(gates['moe / income']) == {'expert 0', 'expert 1'}
  assert '![gates](gates.png)' in (census / 'report' / 'report.md').read_text()


def test_report_of_a_population(esmm):
  report.report(esmm)
  series = json.loads((esmm / 'report' / 'series.json').read_text())
  assert len(series['members']) == 2
  s = series['figures']['training']['train loss']['click']
  member_rows = [
    [
      json.loads(line)['train/loss/click']
      for line in (esmm / 'members' / m / 'metrics.jsonl')
      .read_text()
      .splitlines()
      if 'train/loss/click' in line
    ]
    for m in series['members']
  ]
  assert s['members'] == member_rows
  np.testing.assert_allclose(s['mean'], np.mean(member_rows, 0))
  np.testing.assert_allclose(s['std'], np.std(member_rows, 0))
  assert (esmm / 'report' / 'training.png').exists()


def _fails(cli_run, argv, capsys) -> str:
  with pytest.raises(SystemExit) as e:
    cli_run(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  return err


def test_bad_input_is_one_line(census, census_rows, tmp_path, capsys):
  empty = tmp_path / 'untrained'
  empty.mkdir()
  (empty / 'config.json').write_text((census / 'config.json').read_text())
  (empty / preprocessing.FILE).write_text(
    (census / preprocessing.FILE).read_text()
  )
  err = _fails(evaluate.run, [f'--workdir={empty}'], capsys)
  assert err.startswith('mtl-eval: error: ') and 'no checkpoint' in err
  err = _fails(evaluate.run, [f'--workdir={census}', '--split=tset'], capsys)
  assert err.startswith("mtl-eval: error: --split is 'tset'")
  path, raw, _ = census_rows
  short = tmp_path / 'short.csv'
  raw.drop(columns=['age']).iloc[:10].to_csv(short, index=False)
  argv = [f'--workdir={census}', f'--input={short}', '--output=p.parquet']
  err = _fails(predict.run, argv, capsys)
  assert err.startswith('mtl-predict: error: ') and "no column 'age'" in err
  extra = tmp_path / 'extra.csv'
  raw.assign(shoe_size='42').iloc[:10].to_csv(extra, index=False)
  argv[1] = f'--input={extra}'
  err = _fails(predict.run, argv, capsys)
  assert "column 'shoe_size'" in err


def test_outputs_that_would_lose_data_are_refused_before_the_work(
  census, census_rows, tmp_path, capsys
):
  path, raw, _ = census_rows
  rows = tmp_path / 'rows.csv'
  raw.iloc[:10].to_csv(rows, index=False)
  before = rows.read_bytes()
  # --output the input file: the rows would be replaced by predictions.
  argv = [f'--workdir={census}', f'--input={rows}', f'--output={rows}']
  err = _fails(predict.run, argv, capsys)
  assert '--output' in err and 'is the --input file' in err
  assert rows.read_bytes() == before
  # mtl-export into the workdir, or over a folder of the user's own files.
  config_before = (census / 'config.json').read_bytes()
  err = _fails(export.run, [f'--workdir={census}', f'--out={census}'], capsys)
  assert 'is the workdir' in err
  assert (census / 'config.json').read_bytes() == config_before
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('keep me')
  argv = [f'--workdir={census}', f'--out={mine}']
  err = _fails(export.run, argv, capsys)
  assert 'non-empty directory that holds no earlier export' in err
  assert sorted(p.name for p in mine.iterdir()) == ['notes.txt']
