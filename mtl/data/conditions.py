"""Conditions 'column op number' of the feature schema (schema.py).

A task's condition label ('rating >= 4'), its sample space (`where`) and a
count feature's labels (counts.py) are conditions: a column, an op among
== != >= <= > <, and a number; a bare column name means 'column == 1'.
"""

import dataclasses
import re

import numpy as np

from mtl.errors import ConfigError

_OPS = {
  '==': np.equal,
  '!=': np.not_equal,
  '>=': np.greater_equal,
  '<=': np.less_equal,
  '>': np.greater,
  '<': np.less,
}
_CONDITION = re.compile(r'^\s*(.+?)\s*(==|!=|>=|<=|>|<)\s*([^\s=<>!]+)\s*$')


@dataclasses.dataclass(frozen=True)
class Condition:
  """`column op value` on a column's numbers."""

  column: str
  op: str
  value: float

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return _OPS[self.op](x, self.value)

  def __str__(self) -> str:
    return f'{self.column} {self.op} {self.value:g}'


def label_column(text: str) -> str:
  """The column a count label reads (a column, or a condition's)."""
  m = _CONDITION.match(text)
  return m[1] if m and re.search(r'[=<>!]', text) else text.strip()


def parse_condition(text, where: str) -> Condition:
  """'column op number' (or a bare column: 'column == 1')."""
  if not isinstance(text, str) or not text.strip():
    raise ConfigError(
      f'{where} is {text!r}, expected a column or a condition like '
      "'is_click == 1'"
    )
  m = _CONDITION.match(text)
  if not m:
    if re.search(r'[=<>!]', text):
      raise ConfigError(
        f'{where} is {text!r}, expected a condition like '
        "'column >= 4' (op one of == != >= <= > <, then a number)"
      )
    return Condition(text.strip(), '==', 1.0)
  try:
    value = float(m[3])
  except ValueError:
    raise ConfigError(
      f'{where} is {text!r}: {m[3]!r} is not a number, expected '
      "'column op number'"
    ) from None
  return Condition(m[1], m[2], value)
