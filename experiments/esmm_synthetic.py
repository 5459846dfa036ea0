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

Three data regimes (--regimes): `dense`, the configs' defaults (2,000 items,
Zipf 1.1, 10% clicks, 20% conversion among clicks: most impressions are of
well-clicked items); `sparse`, the data-sparsity premise of the ESMM paper
(Sec. 2.2: CVR samples are a small fraction of impressions; Ali-CCP has a
3.75% CTR): 20,000 items with a flatter Zipf 0.7, 4% clicks, 10% conversion
among clicks, item effects stronger than the features' -- most items are
seen a handful of times, so no model can learn their effects and all stay
far below the oracle; and `sparse_cvr`, the same scarce clicks and
conversions (4%, 10%) on well-seen items: 800,000 impressions of 300 items
(Zipf 0.5): the median item has 2,000 impressions but 30 clicks and no
conversion (half the test impressions are of items with no training
conversion), and item factors the click and conversion share (rho_items
0.95, the premise of ESMM's shared embeddings). There the CVR's item effect
is learnable from the impressions (through the CTR's item effect) but
hardly from the clicked impressions alone: ESMM's claim, testable against
the oracle. Each regime's training settings apply to every model alike;
`sparse_cvr`'s learning rate 2e-2 was picked on validation CVR AUC over
{3e-3, 1e-2, 2e-2} for ESMM and BASE separately (one seed each; both picked
2e-2), its 5 epochs to keep the whole script under 30 minutes (validation
AUCs flatten by then).

Reported (test split, mean +- std over seeds): the CVR AUC over ALL
impressions against the latent conversions ('cvr_all': the selection-bias
measure), the CVR AUC on clicked impressions (ESMM's Table 2 metric), the
CTR AUC, and the oracle: the AUC of the true propensity on the same labels.
Populations live in --workdirs/<regime>/<model>; a finished one of the same
config is reused (experiments/harness; --force re-runs). Writes
experiments/results/esmm_synthetic.{json,md} (or --out).
"""

import pathlib
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import stats  # noqa: E402

_MODELS = flags.DEFINE_list(
  'models', ['esmm', 'single_task', 'mmoe'], 'configs/entire_space.py models.'
)
_REGIMES = flags.DEFINE_list(
  'regimes', ['dense', 'sparse', 'sparse_cvr'], 'Data regimes (REGIMES).'
)
_EPOCHS = flags.DEFINE_integer('epochs', 0, "0: the regime's or config's.")
harness.define_flags(
  out='esmm_synthetic',
  workdirs='esmm_synth',
  seeds=10,
  seeds_help='Model seeds 0..N-1 per population.',
)
FLAGS = flags.FLAGS

# Per regime: dataset keyword arguments, and training overrides (every
# model alike).
REGIMES = {
  'dense': ({}, {}),
  'sparse': (
    dict(
      num_items=20_000,
      zipf=0.7,
      click_rate=0.04,
      conversion_rate=0.1,
      item_scale=1.5,
      feature_scale=0.7,
    ),
    {},
  ),
  'sparse_cvr': (
    dict(
      n_train=800_000,
      num_items=300,
      zipf=0.5,
      rho_items=0.95,
      click_rate=0.04,
      conversion_rate=0.1,
      item_scale=1.5,
      feature_scale=0.7,
    ),
    dict(batch_size=4096, num_epochs=5, learning_rate=2e-2),
  ),
}
METRICS = {
  'cvr_all': 'test/auc/cvr_all',
  'cvr_clicked': 'test/auc/conversion',
  'ctr': 'test/auc/click',
}


def main(argv):
  del argv
  record, lines = {}, []
  for regime in _REGIMES.value:
    t = time.time()
    rows, oracle = run_regime(regime)
    record[regime] = {
      'dataset': REGIMES[regime][0],
      'training': REGIMES[regime][1],
      'oracle_cvr_auc_test': oracle['cvr'],
      'oracle_ctr_auc_test': oracle['ctr'],
      'rows': rows,
      'wall_time_s': time.time() - t,
    }
    lines += table(regime, rows, oracle)
  harness.write_results('esmm_synthetic', record, lines, out=FLAGS.out)


def run_regime(regime):
  from configs import entire_space
  from mtl.shell import build

  rows, oracle = [], None
  for model in _MODELS.value:
    workdir = pathlib.Path(FLAGS.workdirs) / regime / model
    config = entire_space.get_config(model)
    data, training = REGIMES[regime]
    config.dataset.update(data)
    config.progress_bar = False
    config.population.seeds = tuple(range(FLAGS.seeds))
    for key, value in training.items():
      if key == 'learning_rate':
        config.optimizer.learning_rate = value
      else:
        config[key] = value
    if _EPOCHS.value:
      config.num_epochs = _EPOCHS.value
    if oracle is None:
      facts = build.load_dataset(config).stats
      oracle = {
        'cvr': facts['oracle_auc']['test'],
        'ctr': facts['oracle_ctr_auc']['test'],
      }
    result = harness.run(config, workdir, force=FLAGS.force)
    members = result['members']
    row = {
      'model': model,
      'seeds': len(members),
      'train_wall_time_s': result['wall_time_s'],
    }
    for name, key in METRICS.items():
      values = [m['test'][key] for m in members]
      row[name] = stats.mean_std(values)
    row['cvr_all_values'] = [m['test'][METRICS['cvr_all']] for m in members]
    rows.append(row)
    print(regime, model, {k: f'{row[k][0]:.4f}' for k in METRICS}, flush=True)
  return rows, oracle


def table(regime, rows, oracle):
  """Markdown: the regime's settings, then one row per model."""
  base = next((r for r in rows if r['model'] == 'single_task'), None)
  data, training = REGIMES[regime]
  params = ', '.join(f'{k}={v}' for k, v in {**data, **training}.items())
  lines = [
    f'**{regime}** (`configs/entire_space.py`'
    + (f' with {params}' if params else '')
    + f', data seed 0): test AUC mean +- std over {FLAGS.seeds} model seeds. '
    f'Oracle (the true propensity) CVR AUC over all impressions '
    f'**{oracle["cvr"]:.4f}**, CTR AUC {oracle["ctr"]:.4f}.',
    '',
    '| model | CVR AUC, all impressions | gap to oracle | vs BASE '
    '(single_task) | CVR AUC, clicked | CTR AUC |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  for r in rows:
    mean, std = r['cvr_all']
    gain = '-'
    if base and r is not base:
      diff, z = stats.diff_in_se(
        stats.Summary(mean, std, r['seeds']),
        stats.Summary(*base['cvr_all'], base['seeds']),
      )
      gain = f'{diff:+.4f} ({z:+.1f} SE)'
    lines.append(
      f'| {r["model"]} | {mean:.4f} +- {std:.4f} | '
      f'{mean - oracle["cvr"]:+.4f} | {gain} | '
      f'{r["cvr_clicked"][0]:.4f} +- {r["cvr_clicked"][1]:.4f} | '
      f'{r["ctr"][0]:.4f} +- {r["ctr"][1]:.4f} |'
    )
  return lines + ['']


if __name__ == '__main__':
  harness.run_main(main)
