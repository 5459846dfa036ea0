"""GradNorm's toy problem (Chen et al., ICML 2018, Sec. 4 and Fig. 2).

  python experiments/gradnorm_toy.py [--steps=3000] [--seeds=3]

T regression tasks f_i(x) = sigma_i * tanh((B + eps_i) x), x in R^250,
outputs in R^100, B with i.i.d. N(0, 10) entries shared by the tasks and eps_i
with N(0, 3.5) entries per task (variances, as the paper writes N(0, 10)).
Inputs x ~ N(0, I / (250 * 13.5)), so the pre-activations have unit variance
and tanh is not saturated (the paper does not give the input distribution),
drawn fresh for every batch (the generator is known: no finite training set
to overfit); the held-out set is fixed. The model is the paper's: a 4-layer
100-unit ReLU trunk shared by all tasks (its last Dense kernel is GradNorm's
W) and an affine head per task; L_i is the mean squared error. T = 2 with
sigma = (1, 100) and T = 10 with sigma_i log-uniform in [1, 100] (the paper
says the sigma_i span a range; the draw is seeded).

Methods, each with the same data, init and Adam (lr 1e-3, batch 256) on the
model: equal weights, GradNorm (alpha = 0.12, the paper's toy value; weights
by Adam at lr 0.025, mtl's default) and uncertainty weighting (regression
form). Reported, as in the paper: sum_i L_i(t) / L_i(0) on held-out data,
and the weights over time. Writes experiments/results/gradnorm_toy.*
(json, md, png; or --out).
"""

import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import stats  # noqa: E402
from mtl.core.weighting import WEIGHTINGS  # noqa: E402

_STEPS = flags.DEFINE_integer('steps', 3000, 'Training steps per run.')
_LOG_EVERY = flags.DEFINE_integer(
  'log_every', 50, 'Steps between held-out evaluations.'
)
harness.define_flags(out='gradnorm_toy', seeds=3)
FLAGS = flags.FLAGS

D_IN, D_OUT, HIDDEN, LAYERS = 250, 100, 100, 4
N_TEST, BATCH = 4096, 256
X_SCALE = 1.0 / np.sqrt(D_IN * 13.5)
METHODS = {
  'equal': ('equal', {}),
  'gradnorm': ('gradnorm', {'alpha': 0.12, 'learning_rate': 0.025}),  # Adam
  'uncertainty': ('uncertainty', {'forms': 'regression'}),
}


def make_task(key, sigmas):
  """(B + eps_i) [T, D_OUT, D_IN] and sigma [T]."""
  t = len(sigmas)
  kb, ke = jax.random.split(key)
  b = jnp.sqrt(10.0) * jax.random.normal(kb, (D_OUT, D_IN))
  eps = jnp.sqrt(3.5) * jax.random.normal(ke, (t, D_OUT, D_IN))
  return b + eps, jnp.asarray(sigmas, jnp.float32)


def sample(key, task, n):
  """x [n, D_IN] and targets [T, n, D_OUT]."""
  mats, sigmas = task
  x = X_SCALE * jax.random.normal(key, (n, D_IN))
  return x, sigmas[:, None, None] * jnp.tanh(jnp.einsum('tod,nd->tno', mats, x))


def init_params(key, t):
  keys = jax.random.split(key, LAYERS + 1)
  trunk, d = [], D_IN
  for k in keys[:LAYERS]:
    trunk.append(
      {
        'kernel': jax.random.normal(k, (d, HIDDEN)) * jnp.sqrt(2.0 / d),
        'bias': jnp.zeros((HIDDEN,)),
      }
    )
    d = HIDDEN
  heads = {
    'kernel': jax.random.normal(keys[-1], (t, HIDDEN, D_OUT))
    * jnp.sqrt(1.0 / HIDDEN),
    'bias': jnp.zeros((t, D_OUT)),
  }
  return {'trunk': trunk, 'heads': heads}


def task_losses(params, x, y):
  h = x
  for layer in params['trunk']:
    h = jax.nn.relu(h @ layer['kernel'] + layer['bias'])
  out = jnp.einsum('nh,tho->tno', h, params['heads']['kernel'])
  out = out + params['heads']['bias'][:, None]
  return jnp.mean(jnp.square(out - y), axis=(1, 2))  # [T]


def train(method_name, sigmas, seed, steps, log_every):
  name, kwargs = METHODS[method_name]
  t = len(sigmas)
  kd, kp, ks, kt = jax.random.split(jax.random.key(seed), 4)
  task = make_task(kd, sigmas)
  x_te, y_te = sample(kt, task, N_TEST)
  params = init_params(kp, t)
  tx = optax.adam(1e-3)
  method = WEIGHTINGS[name](**kwargs)
  base = jnp.ones((t,))

  def step(carry, k):
    params, opt_state, wstate = carry
    x, y = sample(jax.random.fold_in(ks, k), task, BATCH)
    losses, vjp_fn = jax.vjp(lambda p: task_losses(p, x, y), params)
    extra = {}
    if 'task_grad_norms' in method.needs:
      (per_task,) = jax.vmap(vjp_fn)(jnp.eye(t))
      w_last = per_task['trunk'][-1]['kernel'].reshape(t, -1)
      extra['task_grad_norms'] = jnp.linalg.norm(w_last, axis=1)
    weights, wstate = method.update(
      base, wstate, losses=losses, step=k, epoch=0, **extra
    )
    (grads,) = vjp_fn(jax.lax.stop_gradient(weights))
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state, wstate), weights

  @jax.jit
  def chunk(carry, start):
    carry, weights = jax.lax.scan(step, carry, start + jnp.arange(log_every))
    return carry, weights[-1], task_losses(carry[0], x_te, y_te)

  l0 = task_losses(params, x_te, y_te)
  carry = (params, tx.init(params), method.init(t))
  curve, weights_t = [float(t)], [np.ones(t).tolist()]
  for start in range(0, steps, log_every):
    carry, w, test_losses = chunk(carry, start)
    curve.append(float(jnp.sum(test_losses / l0)))
    weights_t.append(np.asarray(w).tolist())
  return curve, weights_t


def main(argv):
  del argv
  steps, seeds, log_every = _STEPS.value, FLAGS.seeds, _LOG_EVERY.value
  rng = np.random.default_rng(0)
  problems = {
    'T=2': [1.0, 100.0],
    'T=10': np.exp(rng.uniform(0, np.log(100.0), 10)).round(2).tolist(),
  }
  results = {'steps': steps, 'log_every': log_every, 'problems': {}}
  t0 = time.time()
  for pname, sigmas in problems.items():
    entry = {'sigmas': sigmas, 'methods': {}}
    for m in METHODS:
      runs = [train(m, sigmas, s, steps, log_every) for s in range(seeds)]
      curves = np.array([r[0] for r in runs])
      weights = np.array([r[1] for r in runs])
      entry['methods'][m] = {
        'metric_mean': curves.mean(0).tolist(),
        'metric_std': curves.std(0).tolist(),
        'weights_mean': weights.mean(0).tolist(),
        'final_metric': [float(c[-1]) for c in curves],
      }
      mean, std = stats.mean_std(curves[:, -1], ddof=0)
      print(
        f'{pname:5s} {m:12s} final sum L_i/L_i(0) {mean:.4f} +- {std:.4f}  '
        f'final weights {np.round(weights[:, -1].mean(0), 3).tolist()}',
        flush=True,
      )
    results['problems'][pname] = entry
  results['wall_time_s'] = time.time() - t0
  harness.write_results(
    'gradnorm_toy',
    results,
    table(results, seeds),
    out=FLAGS.out,
    figures=plot(results),
  )


def table(results, seeds) -> list[str]:
  """The final metric and weights of each method (std over seeds, ddof 0)."""
  lines = [
    f'GradNorm toy problem, {results["steps"]} steps, {seeds} seeds '
    '(`python experiments/gradnorm_toy.py`). Metric: sum_i L_i(t)/L_i(0) on '
    'held-out data at the end (lower is better; mean +- std over seeds).',
    '',
    '| problem | method | final sum L_i/L_i(0) | final weights (mean) |',
    '|---|---|---:|---|',
  ]
  for pname, entry in results['problems'].items():
    for m, r in entry['methods'].items():
      mean, std = stats.mean_std(r['final_metric'], ddof=0)
      w = np.round(r['weights_mean'][-1], 3).tolist()
      if len(w) > 4:
        w = f'min {min(w)}, max {max(w)}'
      lines.append(f'| {pname} | {m} | {mean:.4f} +- {std:.4f} | {w} |')
  t2 = results['problems']['T=2']['sigmas']
  lines += [
    '',
    f'T=2 sigmas {t2}; T=10 sigmas {results["problems"]["T=10"]["sigmas"]}.',
  ]
  return lines


def plot(results):
  plt = harness.pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  steps = (
    np.arange(
      len(results['problems']['T=2']['methods']['equal']['metric_mean'])
    )
    * results['log_every']
  )
  for row, (pname, entry) in enumerate(results['problems'].items()):
    ax = axes[row, 0]
    for m, r in entry['methods'].items():
      mean, std = np.array(r['metric_mean']), np.array(r['metric_std'])
      ax.plot(steps, mean, label=m)
      ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_yscale('log')
    ax.set_title(f'{pname}: sum_i L_i(t)/L_i(0) (held out)')
    ax.set_xlabel('step')
    ax.legend()
    ax = axes[row, 1]
    w = np.array(entry['methods']['gradnorm']['weights_mean'])
    for i in range(w.shape[1]):
      ax.plot(steps, w[:, i], label=f'sigma={entry["sigmas"][i]:g}')
    ax.set_title(f'{pname}: GradNorm weights (alpha=0.12)')
    ax.set_xlabel('step')
    if w.shape[1] <= 4:
      ax.legend()
  fig.tight_layout()
  return fig


if __name__ == '__main__':
  harness.run_main(main)
