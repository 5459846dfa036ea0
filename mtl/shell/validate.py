"""Every config key's type and range, checked before any work (shell code).

`check_config(config)` is the first thing `trainer.train` does, before the
workdir is opened and before any data is read: a wrong value fails in
about a second, as one `ConfigError` line naming the key, what was found
and what was expected (`optimizer.learning_rate is nan, expected a finite
number > 0`), instead of after a data preparation or a compile.

Which keys: the fixed keys of configs/common.py, the chosen architecture's
`model.<key>`, the chosen method's `weighting.<method>.<key>` and the
values of `population.weighting.<key>`, and the dataset's `dataset.<key>`.
Keywords of other architectures and methods are unused, so they are not
checked; keys no component takes are reported where they are resolved
(keywords.resolve_model, build.load_dataset), with a suggestion.

Rules:
- Fixed keys: the table `_FIXED` (counts >= 1, intervals >= 0 where 0 means
  'off' or 'at epoch ends', num_auc_bins >= 2, the optimizer's ranges, the
  types of flags and strings), and the enumerations against the modules that
  own their values: optim.OPTIMIZERS and SCHEDULES,
  sparse.SPARSE_OPTIMIZERS (optimizer.sparse.method), parallel.BACKENDS,
  writers.WANDB_MODES, and the registries and build.INPUT_MODES through
  build.check_names. towers.hidden may be empty (a tower straight to its
  logit, as tests/test_model.py builds); its entries are widths >= 1.
  Across keys: a weight_decay only with 'adamw'; init_from must hold
  checkpoints/; wide.crosses are pairs; two towers take neither
  wide.enabled nor an interaction.
- Component keywords (architecture, weighting method, dataset loader): the
  type from the component's signature (an int is not a bool or a float; a
  float may be an int; a tuple's entries have their annotated type); an
  unset keyword (None) takes its default when resolved and is not checked.
  Then rules derived from the keyword's name, because mtl names keywords by
  what they hold:
    num_*, max_*, *_steps, *_every (model and weighting, not the dataset's
      generator sizes, which its loader checks): an int >= 1, a count or an
      interval; but where an architecture has several num_<kind>_experts
      (CGC, PLE: specific and shared), each is >= 0 and their sum >= 1,
      since one kind may be absent;
    *hidden: layer widths, a non-empty tuple of ints >= 1;
    dropout, *_dropout, *_fraction: a probability in [0, 1);
    learning_rate, *_learning_rate: a number > 0.
  Keywords whose rule the name does not tell are listed in `_EXTRA`.
- Every float anywhere in the checked keys, also inside tuples, is finite.
- Then the chosen weighting method is constructed from its keywords (and
  once per member value of population.weighting.<key>): its factory's own
  checks (GradNorm's alpha >= 0, ...) run now, not after loading the data,
  and its message names the config key (weighting.gradnorm.alpha).
"""

import dataclasses
import math
import numbers
import os
import pathlib
import re
import types
import typing

from mtl.core import model as model_lib
from mtl.core import optim, parallel, precision, sparse
from mtl.core import tasks as tasks_lib
from mtl.core.architectures import ARCHITECTURES, two_tower
from mtl.core.layers import interactions, numeric
from mtl.core.weighting import WEIGHTINGS
from mtl.data import DATASETS
from mtl.errors import ConfigError, MtlError, did_you_mean
from mtl.shell import build, members, profiling, selection, writers


@dataclasses.dataclass(frozen=True)
class _Rule:
  """What a value may be: its kind ('int', 'float', 'probability', 'bool',
  'str', 'choice', 'tuple'; 'any': checked elsewhere), its lower bound, and
  for a tuple its entries."""

  kind: str
  low: float = -math.inf
  strict: bool = False  # low itself is excluded
  choices: tuple = ()
  each: '_Rule | None' = None  # a tuple's entries
  nonempty: bool = False  # a tuple
  optional: bool = False  # None is allowed (an unset placeholder)
  bools: bool = False  # a choice: True and False too (a legacy meaning)


def _count(low=1):
  return _Rule('int', low)


_WIDTHS = _Rule('tuple', each=_count(), nonempty=True)
_FIXED = {
  'seed': _Rule('int'),
  'batch_size': _count(),
  'num_epochs': _count(),
  'steps_per_dispatch': _count(),
  'eval_batch_size': _count(),
  'eval_every_epochs': _count(),
  'log_every_steps': _count(),
  'max_consecutive_nonfinite': _count(),
  'num_auc_bins': _count(2),
  'diagnostics_every_steps': _count(0),
  'embedding.dim': _count(),
  # A tower may have no hidden layer: backbone output -> Dense(1).
  'towers.hidden': _Rule('tuple', each=_count()),
  'towers.dropout': _Rule('probability'),
  'optimizer.name': _Rule('choice', choices=tuple(optim.OPTIMIZERS)),
  'optimizer.learning_rate': _Rule('float', 0, strict=True),
  'optimizer.weight_decay': _Rule('float', 0),
  'optimizer.grad_clip_norm': _Rule('float', 0),
  'optimizer.schedule': _Rule('choice', choices=optim.SCHEDULES),
  'optimizer.warmup_steps': _count(0),
  # Sparse embedding updates; table names are checked against the model's
  # tables when it is built (optim.sparse_tables).
  'optimizer.sparse.tables': _Rule('tuple', each=_Rule('str'), optional=True),
  'optimizer.sparse.min_rows': _Rule('int', 0, optional=True),  # 0: off
  'optimizer.sparse.method': _Rule(
    'choice', choices=tuple(sparse.SPARSE_OPTIMIZERS), optional=True
  ),
  'optimizer.sparse.ftrl.beta': _Rule('float', 0, optional=True),
  'optimizer.sparse.ftrl.l1': _Rule('float', 0, optional=True),
  'optimizer.sparse.ftrl.l2': _Rule('float', 0, optional=True),
  # The wide part's optimizer and L2 on touched embedding rows; the
  # pairs of embedding_l2_tables are checked in check_config (optim).
  'optimizer.wide.name': _Rule('choice', choices=optim.WIDE_OPTIMIZERS),
  'optimizer.wide.learning_rate': _Rule('float', 0, strict=True),
  'optimizer.wide.l1': _Rule('float', 0),
  'optimizer.wide.l2': _Rule('float', 0),
  'optimizer.wide.beta': _Rule('float', 0),
  'optimizer.embedding_l2': _Rule('float', 0),
  'optimizer.embedding_l2_tables': _Rule(
    'tuple', each=_Rule('tuple', each=_Rule('any'))
  ),  # (table, lambda) pairs: optim.embedding_l2_of
  # Wide & Deep and crosses (mtl/core/layers/wide.py, interactions.py);
  # cross feature names are checked when the model sees the data.
  'wide.enabled': _Rule('bool'),
  'wide.dense': _Rule('bool'),
  'wide.crosses': _Rule('tuple', each=_Rule('tuple', each=_Rule('str'))),
  'wide.cross_buckets': _count(),
  'interaction': _Rule('choice', choices=interactions.INTERACTIONS),
  'cross.num_layers': _count(),
  'cross.low_rank': _count(0),  # 0: full rank
  # The dense columns' embedding (layers/numeric.py); its ranges and the
  # architectures it suits: model.check_numeric.
  'numeric.embedding': _Rule('choice', choices=numeric.EMBEDDINGS),
  'numeric.frequencies': _count(),
  'numeric.dim': _count(),
  'numeric.sigma': _Rule('float', 0, strict=True),
  # The backbone's and towers' compute dtype (mtl/core/precision.py).
  'precision': _Rule('choice', choices=tuple(precision.PRECISIONS)),
  'select_best': _Rule('choice', choices=selection.MODES, bools=True),
  # (task, value) pairs; names, values: tasks_lib.task_loss_pairs.
  **{
    f'task_loss.{key}': _Rule('tuple', each=_Rule('tuple', each=_Rule('any')))
    for key in tasks_lib.LOSS_DEFAULTS
  },
  'early_stopping.patience': _count(0),  # 0: off
  'progress_bar': _Rule('bool'),
  'wandb.mode': _Rule('choice', choices=writers.WANDB_MODES),
  'wandb.project': _Rule('str'),
  'wandb.entity': _Rule('str', optional=True),
  'wandb.group': _Rule('str', optional=True),
  'wandb.name': _Rule('str', optional=True),
  'wandb.tags': _Rule('tuple', each=_Rule('str')),
  'checkpoint.every_steps': _count(0),  # 0: at every epoch end
  'checkpoint.max_to_keep': _count(),
  'checkpoint.async_save': _Rule('bool'),
  'init_from': _Rule('str', optional=True),
  'workdir_allow_changes': _Rule('bool'),
  'parallel.num_devices': _count(0),  # 0: every device
  'skip_nonfinite': _Rule('bool'),
  'divergence_factor': _Rule('float', 0),  # 0: off
  'stop_on_divergence': _Rule('bool'),
  'profile.steps': _Rule('str'),  # 'A:B' or '': profiling.parse_steps
  'population.size': _count(0),  # 0: as many as the lists give
  'population.seeds': _Rule('tuple', each=_Rule('int')),
  'population.bagging': _Rule('bool'),
  'population.learning_rates': _Rule(
    'tuple', each=_Rule('float', 0, strict=True)
  ),
  'population.task_weights': _Rule(
    'tuple', each=_Rule('tuple', each=_Rule('float', 0), nonempty=True)
  ),
}
# Keys checked elsewhere in check_config: names, and the component sections.
NAMED = ('dataset_name', 'model_name', 'weighting_name', 'input_mode')
SECTIONS = ('dataset', 'model', 'weighting', 'population.weighting')
# Component keywords whose rule their name does not tell: (section, key).
_EXTRA = {
  ('model', 'calibration'): _Rule('float', 0),  # AITM's loss weight
  ('model', 'gamma'): _Rule('float', 0, strict=True),  # DSelect-k's width
  ('model', 'entropy_weight'): _Rule('float', 0),  # DSelect-k's lambda
  # DBMTL's (task, parent) pairs; tasks known and acyclic: DBMTL checks.
  ('model', 'dependencies'): _Rule(
    'tuple', each=_Rule('tuple', each=_count(0))
  ),
  ('model', 'interaction'): _Rule('choice', choices=two_tower.INTERACTIONS),
  # HoME's partition of the tasks (checked against T by HoME) and the
  # rank of its feature-gates (0: off).
  ('model', 'task_groups'): _Rule(
    'tuple', each=_Rule('tuple', each=_count(0), nonempty=True)
  ),
  ('model', 'feature_gate_rank'): _count(0),
  # PEPNet's Gate NU: hidden width and gamma (its gates lie in (0, gamma)).
  ('model', 'gate_width'): _count(),
  ('model', 'gate_scale'): _Rule('float', 0, strict=True),
}


def _get(config, key: str):
  node = config
  for part in key.split('.'):
    if node is None or part not in node:
      return None
    node = node[part]
  return node


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _what(v) -> str:
  for t, name in ((bool, 'a bool'), (str, 'a string'), (type(None), 'unset')):
    if isinstance(v, t):
      return name
  name = type(v).__name__
  return f'{"an" if name[0] in "aeiou" else "a"} {name}'


def _check(key: str, v, rule: _Rule) -> None:
  """Raises a one-line ConfigError unless `v` follows `rule`."""
  kind = rule.kind
  if v is None and rule.optional:
    return
  if kind in ('int', 'float', 'probability'):
    bound = ''
    if rule.low > -math.inf:
      low = int(rule.low) if float(rule.low).is_integer() else rule.low
      bound = f' {">" if rule.strict else ">="} {low}'
    if kind == 'probability':
      bound = ' in [0, 1)'
    if not (_is_int(v) if kind == 'int' else _is_number(v)):
      wanted = 'an int' if kind == 'int' else 'a number'
      raise ConfigError(
        f'{key} is {v!r} ({_what(v)}), expected {wanted}{bound}'
      )
    if not math.isfinite(v):
      raise ConfigError(f'{key} is {v!r}, expected a finite number{bound}')
    low = 0 if kind == 'probability' else rule.low
    if (
      v < low
      or (rule.strict and v == low)
      or (kind == 'probability' and v >= 1)
    ):
      # 'a number' where the key alone does not say it is one of a list.
      scalar = kind != 'int' and not key.endswith(']')
      expected = f'a number{bound}' if scalar else bound.strip()
      raise ConfigError(f'{key} is {v!r}, expected {expected}')
  elif kind == 'bool' and not isinstance(v, bool):
    raise ConfigError(f'{key} is {v!r} ({_what(v)}), expected True or False')
  elif kind == 'str' and not isinstance(v, str):
    raise ConfigError(f'{key} is {v!r} ({_what(v)}), expected a string')
  elif kind == 'choice' and rule.bools and not isinstance(v, bool | str):
    raise ConfigError(
      f'{key} is {v!r} ({_what(v)}), expected True or False, or one of '
      f'{", ".join(rule.choices)}'
    )
  elif kind == 'choice' and not isinstance(v, bool) and v not in rule.choices:
    hint = did_you_mean(v, rule.choices)
    raise ConfigError(
      f'{key} {v!r} is not one of {", ".join(rule.choices)}{hint}'
    )
  elif kind == 'tuple':
    if not isinstance(v, tuple | list):
      raise ConfigError(f'{key} is {v!r} ({_what(v)}), expected a tuple')
    if rule.nonempty and not v:
      raise ConfigError(f'{key} is {tuple(v)}, expected at least one value')
    for i, x in enumerate(v):
      _check(f'{key}[{i}]', x, rule.each)


# Keywords: types from signatures, ranges from names.


def _type_problem(key: str, annotation, v) -> str | None:
  """Why `v` is not a config value of the annotated type, or None."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    problems = [_type_problem(key, a, v) for a in args]
    if None in problems:
      return None
    # The closest arm: the one of v's container kind, else the first.
    seq = isinstance(v, tuple | list)
    for a, problem in zip(args, problems, strict=True):
      if _is_sequence(a) == seq and a is not type(None):
        return problem
    return problems[0]
  names = {
    type(None): ('not set', lambda x: x is None),
    bool: ('True or False', lambda x: isinstance(x, bool)),
    int: ('an int', _is_int),
    float: ('a number', _is_number),
    str: ('a string', lambda x: isinstance(x, str)),
  }
  if annotation in names:
    expected, ok = names[annotation]
    return (
      None if ok(v) else f'{key} is {v!r} ({_what(v)}), expected {expected}'
    )
  if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
    if isinstance(v, str | os.PathLike):
      return None
    return f'{key} is {v!r} ({_what(v)}), expected a path'
  if _is_sequence(annotation):
    if not isinstance(v, tuple | list):
      return f'{key} is {v!r} ({_what(v)}), expected a tuple'
    inner = [a for a in args if a is not Ellipsis]
    if len(inner) == 1:
      for i, x in enumerate(v):
        if problem := _type_problem(f'{key}[{i}]', inner[0], x):
          return problem
  return None  # Any, or an annotation config values cannot express.


def _is_sequence(annotation) -> bool:
  container = typing.get_origin(annotation) or annotation
  return isinstance(container, type) and issubclass(
    container, tuple | list | typing.Sequence
  )


def _hints(component) -> dict:
  try:
    return typing.get_type_hints(component)
  except (NameError, TypeError):
    return {}


def _finite(key: str, v) -> None:
  """Every float in `v` (also inside tuples) is finite."""
  if isinstance(v, float) and not math.isfinite(v):
    raise ConfigError(f'{key} is {v!r}, expected a finite number')
  if isinstance(v, tuple | list):
    for i, x in enumerate(v):
      _finite(f'{key}[{i}]', x)


def _name_rule(name: str, *, counts: bool) -> _Rule | None:
  """The rule a keyword's name tells (module docstring), if any."""
  if counts and (
    name.startswith(('num_', 'max_')) or name.endswith(('_steps', '_every'))
  ):
    return _count()
  if name.endswith('hidden'):
    return _WIDTHS
  if name == 'dropout' or name.endswith(('_dropout', '_fraction')):
    return _Rule('probability')
  if name == 'learning_rate' or name.endswith('_learning_rate'):
    return _Rule('float', 0, strict=True)
  return None


def _check_keyword(key: str, name: str, annotation, v, section: str, rule=None):
  """One set keyword: its type, its floats finite, then `rule` (default:
  the one its name tells)."""
  if problem := _type_problem(key, annotation, v):
    raise ConfigError(problem)
  _finite(key, v)
  rule = (
    rule
    or _EXTRA.get((section, name))
    or _name_rule(name, counts=section != 'dataset')
  )
  if rule is not None:
    _check(key, v, rule)


def _check_keywords(section: str, prefix: str, component, values: dict):
  """A component's set keywords (None: its default, so not checked)."""
  hints = _hints(component)
  experts = [k for k in hints if re.fullmatch(r'num_\w+_experts', k)]
  for name, v in values.items():
    if v is None or name not in hints:
      continue  # The default, or not this component's: resolved later.
    # CGC and PLE: experts of two kinds, one kind may be absent.
    rule = _count(0) if len(experts) > 1 and name in experts else None
    _check_keyword(f'{prefix}{name}', name, hints[name], v, section, rule)
  if len(experts) > 1 and dataclasses.is_dataclass(component):
    defaults = {f.name: f.default for f in dataclasses.fields(component)}
    total = {
      k: defaults.get(k) if values.get(k) is None else values[k]
      for k in experts
    }
    if all(_is_int(n) for n in total.values()) and sum(total.values()) < 1:
      found = ' + '.join(f'{prefix}{k} {n}' for k, n in total.items())
      raise ConfigError(f'{found} is 0 experts, expected at least 1')


# A weighting factory's own message, 'weighting <method>: <key> is ...'.
_METHOD_MESSAGE = re.compile(r'^weighting (\w+): (\w+) ')


def _method_error(where: str, error: Exception) -> ConfigError:
  """A factory's error on its keywords (ConfigError, or a ValueError or
  TypeError of a factory that does not use it) naming the config key."""
  text = _METHOD_MESSAGE.sub(
    lambda m: f'weighting.{m[1]}.{m[2]} ', ' '.join(str(error).split())
  )
  return ConfigError(f'{where}{text}')


def _check_weighting(config) -> None:
  name = config.weighting_name
  factory = WEIGHTINGS[name]
  section = _get(config, f'weighting.{name}')
  kwargs = {} if section is None else dict(section.items())
  _check_keywords('weighting', f'weighting.{name}.', factory, kwargs)
  hints = _hints(factory)
  try:
    factory(**kwargs)
  except (MtlError, ValueError, TypeError) as e:
    raise _method_error('', e) from e
  per_member = _get(config, 'population.weighting')
  for key, values in per_member.items() if per_member else ():
    if values is None or not len(values):
      continue
    if key not in kwargs:
      raise ConfigError(
        f'population.weighting.{key}: {name!r} has no such '
        f'hyper-parameter, expected one of {sorted(kwargs)}'
      )
    for k, value in enumerate(values):
      where = f'population.weighting.{key}[{k}]'
      _check_keyword(where, key, hints[key], value, 'weighting')
      try:
        factory(**{**kwargs, key: value})
      except (MtlError, ValueError, TypeError) as e:
        raise _method_error(f'{where}: ', e) from e


def _check_two_tower(config) -> None:
  """Two towers: both feature lists set and disjoint (which features exist
  is checked when the model sees the data); the bilinear and dot forms
  are exact only with towers.hidden = () (two_tower.py)."""
  cls = ARCHITECTURES[config.model_name]
  if not issubclass(cls, two_tower.TwoTower):
    return
  user = tuple(_get(config, 'model.user_features') or ())
  item = tuple(_get(config, 'model.item_features') or ())
  for key, names in (('user_features', user), ('item_features', item)):
    if not names:
      raise ConfigError(
        f'model.{key} is empty, expected the names of the {key[:4]} '
        "tower's features"
      )
  both = sorted(set(user) & set(item))
  if both:
    raise ConfigError(
      f'feature {both[0]!r} is in model.user_features and item_features, '
      'expected one tower each'
    )
  defaults = {f.name: f.default for f in dataclasses.fields(cls)}
  interaction = _get(config, 'model.interaction') or defaults['interaction']
  hidden = tuple(config.towers.hidden)
  if interaction != 'mlp' and hidden:
    raise ConfigError(
      f'towers.hidden is {hidden} with model.interaction {interaction!r}, '
      "expected (): the tower's Dense(1) is the form's diagonal and bias "
      "(an MLP head is interaction 'mlp')"
    )


def _check_wide(config) -> None:
  """Crosses are pairs; two towers take neither a wide part nor an
  interaction (their score factors into the towers' embeddings)."""
  for i, pair in enumerate(_get(config, 'wide.crosses') or ()):
    if len(pair) != 2:
      raise ConfigError(
        f'wide.crosses[{i}] is {tuple(pair)}, expected a pair of feature names'
      )
  if not issubclass(ARCHITECTURES[config.model_name], two_tower.TwoTower):
    return
  interaction = _get(config, 'interaction')
  if interaction != 'none':
    raise ConfigError(
      f'interaction is {interaction!r} with model {config.model_name!r}, '
      "expected 'none': two towers split x by feature"
    )
  if _get(config, 'wide.enabled'):
    raise ConfigError(
      f'wide.enabled is True with model {config.model_name!r}, expected '
      "False: a two-tower score factors into the towers' embeddings"
    )


def check_config(config) -> None:
  """Raises a one-line ConfigError on the first wrong key of `config`."""
  for key in NAMED:
    _check(key, _get(config, key), _Rule('str'))
  build.check_names(config)
  parallel.check_backend(_get(config, 'parallel.backend'))
  for key, rule in _FIXED.items():
    _check(key, _get(config, key), rule)
  profiling.parse_steps(_get(config, 'profile.steps'))  # 'A:B', 0 <= A < B
  name = config.model_name
  model = _get(config, 'model')
  _check_keywords(
    'model', 'model.', ARCHITECTURES[name], dict(model.items()) if model else {}
  )
  _check_two_tower(config)
  _check_wide(config)
  model_lib.check_numeric(_get(config, 'numeric'), name)
  tasks_lib.task_loss_pairs(_get(config, 'task_loss'))  # names: at load
  _check_weighting(config)
  dataset = _get(config, 'dataset')
  _check_keywords(
    'dataset',
    'dataset.',
    DATASETS[config.dataset_name],
    dict(dataset.items()) if dataset else {},
  )
  opt = config.optimizer
  if opt.weight_decay and opt.name != 'adamw':
    raise ConfigError(
      f'optimizer.weight_decay is {opt.weight_decay} with optimizer '
      f"{opt.name!r}, expected 0, or >= 0 with 'adamw'"
    )
  optim.wide_optimizer(opt.wide.to_dict())  # l1 only with 'ftrl'.
  optim.embedding_l2_of(opt.embedding_l2, opt.embedding_l2_tables, None)
  if _get(config, 'population.bagging') and not members.is_population(config):
    raise ConfigError(
      'population.bagging is True without a population, expected '
      'population.size or per-member lists (bagging resamples per member)'
    )
  selection.check(
    config.select_best,
    config.early_stopping.patience,
    population=members.is_population(config),
  )
  init_from = _get(config, 'init_from')
  if init_from and not (pathlib.Path(init_from) / 'checkpoints').is_dir():
    raise ConfigError(
      f'init_from {init_from} holds no checkpoints/ directory, expected the '
      'workdir of an earlier run'
    )
