"""What a config value may be, and the one line when it is not (shell code).

A `Rule` is a value's kind ('int', 'float', 'probability', 'bool', 'str',
'choice', 'tuple'; 'any': checked elsewhere), its lower bound, and for a
tuple its entries; `check(key, value, rule)` raises a one-line
`ConfigError` naming the key, what was found and what was expected
(`optimizer.learning_rate is nan, expected a finite number > 0`).
`get(config, 'a.b')` reads a dotted key, None where it is missing.

The tables of rules are validate.py's (the fixed keys of configs/common.py)
and validate_keywords.py's (components' keywords).
"""

import dataclasses
import math
import numbers

from mtl.errors import ConfigError, did_you_mean


@dataclasses.dataclass(frozen=True)
class Rule:
  """What a value may be: its kind ('int', 'float', 'probability', 'bool',
  'str', 'choice', 'tuple'; 'any': checked elsewhere), its lower bound, and
  for a tuple its entries."""

  kind: str
  low: float = -math.inf
  strict: bool = False  # low itself is excluded
  choices: tuple = ()
  each: 'Rule | None' = None  # a tuple's entries
  nonempty: bool = False  # a tuple
  optional: bool = False  # None is allowed (an unset placeholder)
  bools: bool = False  # a choice: True and False too (a legacy meaning)


def count(low=1) -> Rule:
  """A count (low 1) or an interval (low 0: 'off' or 'at epoch ends')."""
  return Rule('int', low)


def get(config, key: str):
  """The value at dotted `key` of `config`, or None where it is missing."""
  node = config
  for part in key.split('.'):
    if node is None or part not in node:
      return None
    node = node[part]
  return node


def is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def what(v) -> str:
  """What `v` is, for a message: 'a bool', 'a string', 'unset', 'an int'."""
  for t, name in ((bool, 'a bool'), (str, 'a string'), (type(None), 'unset')):
    if isinstance(v, t):
      return name
  name = type(v).__name__
  return f'{"an" if name[0] in "aeiou" else "a"} {name}'


def check(key: str, v, rule: Rule) -> None:
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
    if not (is_int(v) if kind == 'int' else is_number(v)):
      wanted = 'an int' if kind == 'int' else 'a number'
      raise ConfigError(f'{key} is {v!r} ({what(v)}), expected {wanted}{bound}')
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
    raise ConfigError(f'{key} is {v!r} ({what(v)}), expected True or False')
  elif kind == 'str' and not isinstance(v, str):
    raise ConfigError(f'{key} is {v!r} ({what(v)}), expected a string')
  elif kind == 'choice' and rule.bools and not isinstance(v, bool | str):
    raise ConfigError(
      f'{key} is {v!r} ({what(v)}), expected True or False, or one of '
      f'{", ".join(rule.choices)}'
    )
  elif kind == 'choice' and not isinstance(v, bool) and v not in rule.choices:
    hint = did_you_mean(v, rule.choices)
    raise ConfigError(
      f'{key} {v!r} is not one of {", ".join(rule.choices)}{hint}'
    )
  elif kind == 'tuple':
    if not isinstance(v, tuple | list):
      raise ConfigError(f'{key} is {v!r} ({what(v)}), expected a tuple')
    if rule.nonempty and not v:
      raise ConfigError(f'{key} is {tuple(v)}, expected at least one value')
    for i, x in enumerate(v):
      check(f'{key}[{i}]', x, rule.each)


def finite(key: str, v) -> None:
  """Every float in `v` (also inside tuples) is finite."""
  if isinstance(v, float) and not math.isfinite(v):
    raise ConfigError(f'{key} is {v!r}, expected a finite number')
  if isinstance(v, tuple | list):
    for i, x in enumerate(v):
      finite(f'{key}[{i}]', x)
