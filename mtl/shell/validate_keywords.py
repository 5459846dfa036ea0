"""Components' keywords checked before any work: the chosen architecture's
`model.<key>`, the dataset loader's `dataset.<key>`, and the chosen
weighting method's `weighting.<method>.<key>` and the values of
`population.weighting.<key>` (shell code; validate.check_config asks).

Rules:
- The type from the component's signature (an int is not a bool or a
  float; a float may be an int; a tuple's entries have their annotated
  type); an unset keyword (None) takes its default when resolved and is not
  checked. Keywords of other components are not this component's: they are
  reported where they are resolved (keywords.resolve_model,
  build.load_dataset), with a suggestion.
- Then rules derived from the keyword's name, because mtl names keywords by
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
- Every float, also inside tuples, is finite.
- Then the chosen weighting method is constructed from its keywords (and
  once per member value of population.weighting.<key>): its factory's own
  checks (GradNorm's alpha >= 0, ...) run now, not after loading the data,
  and its message names the config key (weighting.gradnorm.alpha).
"""

import dataclasses
import os
import re
import types
import typing

from mtl.core.architectures import two_tower
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError, MtlError
from mtl.shell import config_rules
from mtl.shell.config_rules import Rule, count

_WIDTHS = Rule('tuple', each=count(), nonempty=True)  # layer widths
# Component keywords whose rule their name does not tell: (section, key).
_EXTRA = {
  ('model', 'calibration'): Rule('float', 0),  # AITM's loss weight
  ('model', 'gamma'): Rule('float', 0, strict=True),  # DSelect-k's width
  ('model', 'entropy_weight'): Rule('float', 0),  # DSelect-k's lambda
  # DBMTL's (task, parent) pairs; tasks known and acyclic: DBMTL checks.
  ('model', 'dependencies'): Rule('tuple', each=Rule('tuple', each=count(0))),
  ('model', 'interaction'): Rule('choice', choices=two_tower.INTERACTIONS),
  # HoME's partition of the tasks (checked against T by HoME) and the
  # rank of its feature-gates (0: off).
  ('model', 'task_groups'): Rule(
    'tuple', each=Rule('tuple', each=count(0), nonempty=True)
  ),
  ('model', 'feature_gate_rank'): count(0),
  # PEPNet's Gate NU: hidden width and gamma (its gates lie in (0, gamma)).
  ('model', 'gate_width'): count(),
  ('model', 'gate_scale'): Rule('float', 0, strict=True),
}


def _type_problem(key: str, annotation, v) -> str | None:
  """Why `v` is not a config value of the annotated type, or None."""
  what = config_rules.what
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
    int: ('an int', config_rules.is_int),
    float: ('a number', config_rules.is_number),
    str: ('a string', lambda x: isinstance(x, str)),
  }
  if annotation in names:
    expected, ok = names[annotation]
    return None if ok(v) else f'{key} is {v!r} ({what(v)}), expected {expected}'
  if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
    if isinstance(v, str | os.PathLike):
      return None
    return f'{key} is {v!r} ({what(v)}), expected a path'
  if _is_sequence(annotation):
    if not isinstance(v, tuple | list):
      return f'{key} is {v!r} ({what(v)}), expected a tuple'
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


def _name_rule(name: str, *, counts: bool) -> Rule | None:
  """The rule a keyword's name tells (module docstring), if any."""
  if counts and (
    name.startswith(('num_', 'max_')) or name.endswith(('_steps', '_every'))
  ):
    return count()
  if name.endswith('hidden'):
    return _WIDTHS
  if name == 'dropout' or name.endswith(('_dropout', '_fraction')):
    return Rule('probability')
  if name == 'learning_rate' or name.endswith('_learning_rate'):
    return Rule('float', 0, strict=True)
  return None


def _check_keyword(key: str, name: str, annotation, v, section: str, rule=None):
  """One set keyword: its type, its floats finite, then `rule` (default:
  the one its name tells)."""
  if problem := _type_problem(key, annotation, v):
    raise ConfigError(problem)
  config_rules.finite(key, v)
  rule = (
    rule
    or _EXTRA.get((section, name))
    or _name_rule(name, counts=section != 'dataset')
  )
  if rule is not None:
    config_rules.check(key, v, rule)


def _check_keywords(section: str, prefix: str, component, values: dict):
  """A component's set keywords (None: its default, so not checked)."""
  hints = _hints(component)
  experts = [k for k in hints if re.fullmatch(r'num_\w+_experts', k)]
  for name, v in values.items():
    if v is None or name not in hints:
      continue  # The default, or not this component's: resolved later.
    # CGC and PLE: experts of two kinds, one kind may be absent.
    rule = count(0) if len(experts) > 1 and name in experts else None
    _check_keyword(f'{prefix}{name}', name, hints[name], v, section, rule)
  if len(experts) > 1 and dataclasses.is_dataclass(component):
    defaults = {f.name: f.default for f in dataclasses.fields(component)}
    total = {
      k: defaults.get(k) if values.get(k) is None else values[k]
      for k in experts
    }
    if all(config_rules.is_int(n) for n in total.values()) and (
      sum(total.values()) < 1
    ):
      found = ' + '.join(f'{prefix}{k} {n}' for k, n in total.items())
      raise ConfigError(f'{found} is 0 experts, expected at least 1')


def check_section(config, section: str, component) -> None:
  """The set keywords of `config.<section>` ('model', 'dataset') that
  `component` (an architecture, a dataset loader) takes."""
  values = config_rules.get(config, section)
  _check_keywords(
    section, f'{section}.', component, dict(values.items()) if values else {}
  )


# A weighting factory's own message, 'weighting <method>: <key> is ...'.
_METHOD_MESSAGE = re.compile(r'^weighting (\w+): (\w+) ')


def _method_error(where: str, error: Exception) -> ConfigError:
  """A factory's error on its keywords (ConfigError, or a ValueError or
  TypeError of a factory that does not use it) naming the config key."""
  text = _METHOD_MESSAGE.sub(
    lambda m: f'weighting.{m[1]}.{m[2]} ', ' '.join(str(error).split())
  )
  return ConfigError(f'{where}{text}')


def check_weighting(config) -> None:
  """The chosen method's keywords, then the method constructed from them,
  once and once per member value of population.weighting.<key>."""
  name = config.weighting_name
  factory = WEIGHTINGS[name]
  section = config_rules.get(config, f'weighting.{name}')
  kwargs = {} if section is None else dict(section.items())
  _check_keywords('weighting', f'weighting.{name}.', factory, kwargs)
  hints = _hints(factory)
  try:
    factory(**kwargs)
  except (MtlError, ValueError, TypeError) as e:
    raise _method_error('', e) from e
  per_member = config_rules.get(config, 'population.weighting')
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
