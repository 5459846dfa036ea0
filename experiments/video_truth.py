"""Does a trained model recover the generated video log's truth?

  python experiments/video_truth.py [--seeds=3] [--test_seeds=6]

The log of mtl/data/video.py (known interests, log-normal durations, a
duration bias in watch time, sessions that go on with engagement) trained
by configs/video.py (MMoE; continues and log1p watch time), one generated
log per seed (data seed = model seed). On each log's test split:

  watch time  XAUC (same-user pairs ordered by watch_time) of the model's
              prediction, of the oracle (the true expected watch time,
              duration * f) and of the duration alone (the duration bias's
              ranking, Zhan et al., KDD 2022);
  depth       AUC of the 'continues' label (the schema's session label) by
              the model, by the oracle (the true P(continues | user,
              video) = stamina + 0.4 f) and by the user's smoothed training
              rate (a trivial baseline: the users' stamina).

Parts: 'config' (configs/video.py as it is: 200,000 training rows, 1,000
users), 'more data' (800,000 rows, the same world: does the gap to the
oracle shrink with data, as an estimation error would?) and 'test log'
(configs/video.py SMALL_LOG, the log of tests/data/test_video.py's
end-to-end test, over --test_seeds seeds: its margins). A part's stated
margin is the mean gap to the oracle plus 3 standard deviations, rounded up
to 0.005. Writes experiments/results/video_truth.{json,md}.
"""

import math
import os
import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

_TEST_SEEDS = flags.DEFINE_integer(
  'test_seeds', 6, 'Seeds of the test log part.'
)
harness.define_flags(out='video_truth', workdirs='video_truth', seeds=3)
FLAGS = flags.FLAGS
METRICS = ('xauc', 'oracle_xauc', 'duration_xauc', 'auc', 'oracle_auc')
METRICS += ('user_auc',)


def parts():
  from configs import video as video_config

  small = dict(video_config.SMALL_LOG)
  seeds = range(FLAGS.seeds)
  return {
    'config': (dict(rows=200_000), seeds),
    'more data': (dict(rows=800_000), seeds),
    'test log': (small, range(_TEST_SEEDS.value)),
  }


def measure(part: str, log: dict, seed: int, root: pathlib.Path) -> dict:
  """Generates the log, trains on it (or reuses the run), scores it."""
  import numpy as np
  import pandas as pd
  from sklearn.metrics import roc_auc_score

  from configs import video as video_config
  from mtl.core import ranking_metrics as rm
  from mtl.data import video
  from mtl.shell import ensemble

  rows = log['rows']
  name = part.replace(' ', '_')
  data = root / 'data' / name / f'seed{seed}'
  folder = video_config.video_dir(rows, data)
  if not (folder / 'test.parquet').is_file():
    video.write_video_table(folder, seed=seed, **log)
  os.environ['MTL_VIDEO_DIR'] = str(data)
  config = video_config.get_config(str(rows))
  config.seed = seed
  config.progress_bar = False
  config.dataset.data_dir = str(root / 'tfds')
  d = config.dataset
  for key in ('path', 'validation_path', 'test_path'):
    d[key] = d[key].replace('$MTL_VIDEO_DIR', str(data))
  workdir = root / name / f'seed{seed}'
  result = harness.run(config, workdir, force=FLAGS.force)
  group = ensemble.load(config, workdir)
  names = [t.name for t in group.tasks]
  pred = ensemble.predict(group, 'test')[0]
  test = pd.read_parquet(folder / 'test.parquet')
  labels = group.dataset.splits['test']['labels'][names.index('continues')]
  if not np.array_equal(labels, test.true_continues):
    raise AssertionError(f'{folder}: prepared test rows are not the file')
  users, watch = test.user_id.to_numpy(), test.watch_time.to_numpy()
  train = pd.read_parquet(folder / 'train.parquet')
  prior = train.true_continues.mean()
  g = train.groupby('user_id').true_continues.agg(['sum', 'count'])
  rate = ((g['sum'] + 10 * prior) / (g['count'] + 10)).reindex(users)
  y = test.true_continues
  return {
    'part': part,
    'seed': seed,
    'train_rows': rows,
    'users': log.get('num_users', 1000),
    'xauc': rm.xauc(watch, pred[names.index('watch_time')], users),
    'oracle_xauc': rm.xauc(watch, test.true_expected_watch_time, users),
    'duration_xauc': rm.xauc(watch, test.duration, users),
    'auc': float(roc_auc_score(y, pred[names.index('continues')])),
    'oracle_auc': float(roc_auc_score(y, test.true_continue_prob)),
    'user_auc': float(roc_auc_score(y, rate.fillna(prior))),
    'selected_epoch': result.get('selected_epoch'),
    'wall_time_s': result.get('wall_time_s'),
  }


def margin(gaps) -> float:
  """mean + 3 sd of the gaps, rounded up to 0.005."""
  m, s = harness.stats.mean_std(gaps)
  return math.ceil(round((m + 3 * s) / 0.005, 6)) * 0.005


def summarize(runs: list[dict]) -> dict:
  out = {}
  for part in dict.fromkeys(r['part'] for r in runs):
    rs = [r for r in runs if r['part'] == part]
    s = {k: harness.stats.mean_std([r[k] for r in rs]) for k in METRICS}
    gx = [r['oracle_xauc'] - r['xauc'] for r in rs]
    ga = [r['oracle_auc'] - r['auc'] for r in rs]
    s['xauc_gap'] = harness.stats.mean_std(gx)
    s['auc_gap'] = harness.stats.mean_std(ga)
    s['xauc_margin'] = margin(gx)
    s['auc_margin'] = margin(ga)
    s['seeds'] = len(rs)
    s['train_rows'] = rs[0]['train_rows']
    s['users'] = rs[0]['users']
    out[part] = s
  return out


def markdown(summary: dict, runs: list[dict]) -> list[str]:
  def pm(x):
    return f'{x[0]:.4f} +- {x[1]:.4f}'

  lines = [
    '## Watch time (test XAUC) and depth (test AUC of continues)',
    '',
    'mean +- sd over seeds (data seed = model seed); gap = oracle - model;',
    'margin = mean gap + 3 sd, rounded up to 0.005.',
    '',
  ]
  rows = []
  for part, s in summary.items():
    rows.append(
      [
        part,
        f'{s["train_rows"]:,}',
        s['users'],
        s['seeds'],
        pm(s['xauc']),
        pm(s['oracle_xauc']),
        pm(s['duration_xauc']),
        pm(s['xauc_gap']),
        f'{s["xauc_margin"]:.3f}',
      ]
    )
  lines += harness.markdown_table(
    [
      'part',
      'train rows',
      'users',
      'seeds',
      'model XAUC',
      'oracle XAUC',
      'duration-only XAUC',
      'gap',
      'margin',
    ],
    rows,
    'lrrrrrrrr',
  )
  lines.append('')
  rows = []
  for part, s in summary.items():
    rows.append(
      [
        part,
        f'{s["train_rows"]:,}',
        s['seeds'],
        pm(s['auc']),
        pm(s['oracle_auc']),
        pm(s['user_auc']),
        pm(s['auc_gap']),
        f'{s["auc_margin"]:.3f}',
      ]
    )
  lines += harness.markdown_table(
    [
      'part',
      'train rows',
      'seeds',
      'model depth AUC',
      'oracle AUC',
      'user-rate AUC',
      'gap',
      'margin',
    ],
    rows,
    'lrrrrrrr',
  )
  lines += ['', '## Per seed', '']
  lines += harness.markdown_table(
    ['part', 'seed', *METRICS, 'selected epoch'],
    [
      [
        r['part'],
        r['seed'],
        *(f'{r[k]:.4f}' for k in METRICS),
        r['selected_epoch'],
      ]
      for r in runs
    ],
    'lr' + 'r' * (len(METRICS) + 1),
  )
  return lines


def main(argv):
  del argv
  root = pathlib.Path(FLAGS.workdirs)
  runs = []
  for part, (log, seeds) in parts().items():
    for seed in seeds:
      runs.append(measure(part, log, seed, root))
      print({k: runs[-1][k] for k in ('part', 'seed', *METRICS)}, flush=True)
  summary = summarize(runs)
  record = {'summary': summary, 'runs': runs}
  harness.write_results(
    'video_truth', record, markdown(summary, runs), out=FLAGS.out
  )


if __name__ == '__main__':
  harness.run_main(main)
