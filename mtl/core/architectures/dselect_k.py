"""DSelect-k: MMoE's experts mixed by k-sparse, differentiable gates.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong, Chi,
"DSelect-k: Differentiable Selection in the Mixture of Experts with
Applications to Multi-Task Learning", NeurIPS 2021: Sec. 3 (the gate),
applied to multi-task learning as a multi-gate MoE, one gate per task over
shared experts (Fig. 1, right; MMoE's layout). With n experts and
m = ceil(log2 n) bits, task t's per-example gate is

  smooth-step  S(u) = 0 if u <= -gamma/2,  1 if u >= gamma/2,
               else -2 u^3 / gamma^3 + 3 u / (2 gamma) + 1/2;
  selector i   z_i = W_i x in R^m,  i = 1..k,
               r(z_i)_l = prod_j (S(z_ij) if bit j of l is 1 else
               1 - S(z_ij)),  l = 0..n-1 (binary code, most significant
               bit first);
  gate         q(x) = sum_i softmax(A x)_i r(z_i),
  task input   f_t(x) = sum_l q_t(x)_l f_l(x).

Once every |z_ij| >= gamma/2 each r(z_i) is one-hot, so q has at most k
non-zeros. The paper's entropy regulariser, lambda sum_i h(r(z_i)) with
h(p) = -sum_l p_l log(p_l + 1e-6) (the authors' code's epsilon), speeds up
that convergence. When n is not a power of two a code may name no expert;
as in the authors' code, each selector then adds 1 / sum_l r(z_i)_l (here
minus 1, so the term is 0 once the reachable experts hold all the mass; the
gradient is theirs). Both are per-example terms of task t's loss [T, B],
sown into base.EXTRA_LOSSES while training, so a balancing method weighs
them with their task. The authors add lambda times the *sum* over the batch
to a mean loss; mtl averages the term over the task's rows like the loss.

Params 'experts' (ExpertBank [n, ...]) and 'gates': 'selector_logits'
{'kernel': [T, D, k m]} (W, init uniform +-gamma/100) and
'selector_weights' {'kernel': [T, D, k]} (A, init uniform +-0.05), the
authors' initialisation. No bias, as in the paper's per-example gate and
mtl's other gates (the authors' code adds one to W x and A x). Sows the gate
weights q [T, B, n] as intermediates 'expert_weights' (they sum to 1 only
once no mass is on a code without expert, so they are not 'gates').
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl.core.architectures.base import EXTRA_LOSSES, Backbone, dense_kernel
from mtl.core.layers.experts import ExpertBank, mix
from mtl.errors import ConfigError

ENTROPY_EPSILON = 1e-6  # Inside the log of h(p), as in the authors' code.


def smooth_step(u: jax.Array, gamma: float) -> jax.Array:
  """S(u): a cubic from 0 at -gamma/2 to 1 at gamma/2."""
  cubic = -2.0 / gamma**3 * u**3 + 1.5 / gamma * u + 0.5
  return jnp.where(u <= -gamma / 2, 0.0, jnp.where(u >= gamma / 2, 1.0, cubic))


def binary_codes(num_experts: int) -> np.ndarray:
  """[n, m] bools: row l is l in m = ceil(log2 n) bits, most significant
  first."""
  m = math.ceil(math.log2(num_experts))
  return np.array(
    [[(e >> (m - 1 - j)) & 1 for j in range(m)] for e in range(num_experts)],
    bool,
  ).reshape(num_experts, m)


def _uniform(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


class DSelectGates(nn.Module):
  """T per-example DSelect-k gates: x [B, D] -> (q [T, B, n], selector
  outputs r [T, B, k, n])."""

  num_gates: int
  num_experts: int
  num_nonzeros: int
  gamma: float

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    t, k = self.num_gates, self.num_nonzeros
    codes = binary_codes(self.num_experts)
    m = codes.shape[1]
    # T independent affine maps, params stacked [T, ...].
    dense = nn.vmap(
      nn.Dense,
      variable_axes={'params': 0},
      split_rngs={'params': True},
      in_axes=None,
      out_axes=0,
      axis_size=t,
    )
    z_init = _uniform(self.gamma / 100)
    z = dense(
      k * m, use_bias=False, kernel_init=z_init, name='selector_logits'
    )(x)  # [T, B, k m]
    s = smooth_step(z.reshape(t, -1, k, 1, m), self.gamma)  # [T, B, k, 1, m]
    r = jnp.prod(jnp.where(codes, s, 1.0 - s), axis=-1)  # [T, B, k, n]
    w_init = _uniform(0.05)
    alpha = dense(
      k, use_bias=False, kernel_init=w_init, name='selector_weights'
    )(x)  # [T, B, k]
    q = jnp.einsum('tbk,tbkn->tbn', jax.nn.softmax(alpha, axis=-1), r)
    return q, r


def regulariser(r: jax.Array, entropy_weight: float) -> jax.Array:
  """Per-example terms [T, B] of selector outputs r [T, B, k, n]: lambda
  sum_i h(r_i), plus sum_i (1 / sum_l r_il - 1) when n is not 2^m (the sum
  floored at 1e-6: a selector saturated on a code without expert gives a
  large finite term, not inf)."""
  entropy = -jnp.sum(r * jnp.log(r + ENTROPY_EPSILON), axis=(-2, -1))
  term = entropy_weight * entropy
  n = r.shape[-1]
  if n & (n - 1):  # Not a power of two: some codes name no expert.
    reach = jnp.maximum(jnp.sum(r, axis=-1), ENTROPY_EPSILON)
    term = term + jnp.sum(1.0 / reach - 1.0, axis=-1)
  return term


class DSelectK(Backbone):
  """Expert bank [n, B, H] mixed per task by DSelect-k gates -> [T, B, H].

  Attributes:
    num_tasks: T.
    num_experts: n >= 2.
    num_nonzeros: k in [1, n], the most experts a gate selects.
    gamma: the smooth-step's width, > 0 (the authors' default 1).
    entropy_weight: lambda >= 0 of the entropy regulariser (the authors'
      code's default 1e-6).
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
  """

  num_tasks: int
  num_experts: int = 8
  num_nonzeros: int = 2
  gamma: float = 1.0
  entropy_weight: float = 1e-6
  expert_hidden: tuple[int, ...] = (64,)
  dropout: float = 0.0

  def __post_init__(self):
    n, k = self.num_experts, self.num_nonzeros
    if not isinstance(n, int) or n < 2:
      raise ConfigError(
        f'model.num_experts is {n!r}, expected an int >= 2 (DSelect-k '
        'selects experts by binary codes)'
      )
    if not isinstance(k, int) or not 1 <= k <= n:
      raise ConfigError(
        f'model.num_nonzeros is {k!r}, expected an int in [1, {n}] '
        '(model.num_experts)'
      )
    if not (math.isfinite(self.gamma) and self.gamma > 0):
      raise ConfigError(
        f'model.gamma is {self.gamma!r}, expected a finite number > 0'
      )
    if not (math.isfinite(self.entropy_weight) and self.entropy_weight >= 0):
      raise ConfigError(
        f'model.entropy_weight is {self.entropy_weight!r}, expected a finite '
        'number >= 0'
      )
    super().__post_init__()

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The experts' last layer, [n, H_in, H]: every gate can read each."""
    return dense_kernel('experts', 'mlp', num_layers=len(self.expert_hidden))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    experts = ExpertBank(
      self.num_experts, self.expert_hidden, self.dropout, name='experts'
    )(x, train=train)
    q, r = DSelectGates(
      self.num_tasks,
      self.num_experts,
      self.num_nonzeros,
      self.gamma,
      name='gates',
    )(x)
    self.sow('intermediates', 'expert_weights', q)
    if train:
      self.sow(EXTRA_LOSSES, 'regulariser', regulariser(r, self.entropy_weight))
    return mix(q, experts)
