"""ESMM's debiasing on synthetic impressions with known conversion propensity.

  python experiments/esmm_synthetic.py [--seeds=10] [--models=esmm,...]

Data: mtl.data.entire_space (configs/entire_space.py; one fixed data seed):
10% clicks, 20% conversion among clicks, Zipf-popular items whose factors
drive both probabilities, and a negative correlation between the feature
directions of click and conversion, so the clicked impressions are a biased
sample of the feature space. Models (one population each, --seeds model
seeds): `esmm`; `single_task`, the ESMM paper's BASE (its CVR network sees
the clicked impressions only); `mmoe` for reference (CVR trained on clicks,
sharing embeddings and experts with CTR). AITM is left out: it predicts the
conversion step P(click & conversion), not a CVR.

Two data regimes (--regimes): `dense`, the configs' defaults (2,000 items,
Zipf 1.1, 10% clicks, 20% conversion among clicks: most impressions are of
well-clicked items), and `sparse`, the data-sparsity premise of the ESMM
paper (Sec. 2.2: CVR samples are a small fraction of impressions; Ali-CCP has
a 3.75% CTR): 20,000 items with a flatter Zipf 0.7, 4% clicks, 10%
conversion among clicks, item effects stronger than the features'.

Reported (test split, mean +- std over seeds): the CVR AUC over ALL
impressions against the latent conversions ('cvr_all': the selection-bias
measure), the CVR AUC on clicked impressions (ESMM's Table 2 metric), the
CTR AUC, and the oracle: the AUC of the true propensity on the same labels.
Writes experiments/results/esmm_synthetic.{json,md}.
"""

import argparse
import json
import pathlib
import statistics
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REGIMES = {
  'dense': {},
  'sparse': dict(
    num_items=20_000,
    zipf=0.7,
    click_rate=0.04,
    conversion_rate=0.1,
    item_scale=1.5,
    feature_scale=0.7,
  ),
}
METRICS = {
  'cvr_all': 'test/auc/cvr_all',
  'cvr_clicked': 'test/auc/conversion',
  'ctr': 'test/auc/click',
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='esmm,single_task,mmoe')
  parser.add_argument('--seeds', type=int, default=10)
  parser.add_argument('--regimes', default='dense,sparse')
  parser.add_argument('--epochs', type=int, default=0, help='0: config')
  parser.add_argument('--workdirs', default=str(REPO / 'workdirs/esmm_synth'))
  parser.add_argument(
    '--out', default=str(REPO / 'experiments/results/esmm_synthetic')
  )
  args = parser.parse_args()

  record, lines = {}, []
  for regime in args.regimes.split(','):
    rows, oracle = run_regime(args, regime)
    record[regime] = {'oracle_cvr_auc_test': oracle, 'rows': rows}
    lines += table(args, regime, rows, oracle)
  out = pathlib.Path(args.out)
  out.with_suffix('.json').write_text(json.dumps(record, indent=2) + '\n')
  out.with_suffix('.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


def run_regime(args, regime):
  from configs import entire_space
  from mtl import loop, population_loop

  rows, oracle = [], None
  for model in args.models.split(','):
    workdir = pathlib.Path(args.workdirs) / regime / model
    config = entire_space.get_config(model)
    config.dataset.update(REGIMES[regime])
    config.progress_bar = False
    config.population.seeds = tuple(range(args.seeds))
    if args.epochs:
      config.num_epochs = args.epochs
    if oracle is None:
      oracle = loop.load_dataset(config).stats['oracle_auc']['test']
    done = workdir / 'results.json'
    if done.is_file():
      members = json.loads(done.read_text())['members']
    else:
      members = population_loop.train_population(config, workdir)['members']
    row = {'model': model, 'seeds': len(members)}
    for name, key in METRICS.items():
      values = [m['test'][key] for m in members]
      row[name] = (statistics.mean(values), statistics.stdev(values))
    rows.append(row)
    print(regime, model, {k: f'{row[k][0]:.4f}' for k in METRICS}, flush=True)
  return rows, oracle


def table(args, regime, rows, oracle):
  base = next((r for r in rows if r['model'] == 'single_task'), None)
  params = ', '.join(f'{k}={v}' for k, v in REGIMES[regime].items())
  lines = [
    f'**{regime}** (`configs/entire_space.py`'
    + (f' with {params}' if params else '')
    + f', data seed 0): test AUC mean +- std over {args.seeds} model seeds; '
    f'oracle CVR AUC over all impressions (the true propensity): '
    f'{oracle:.4f}.',
    '',
    '| model | CVR AUC, all impressions | vs BASE (single_task) | '
    'CVR AUC, clicked | CTR AUC |',
    '|---|---:|---:|---:|---:|',
  ]
  for r in rows:
    gain = f'{r["cvr_all"][0] - base["cvr_all"][0]:+.4f}' if base else '-'
    lines.append(
      f'| {r["model"]} | {r["cvr_all"][0]:.4f} +- {r["cvr_all"][1]:.4f} | '
      f'{gain} | {r["cvr_clicked"][0]:.4f} +- {r["cvr_clicked"][1]:.4f} | '
      f'{r["ctr"][0]:.4f} +- {r["ctr"][1]:.4f} |'
    )
  return lines + ['']


if __name__ == '__main__':
  main()
