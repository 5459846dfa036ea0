"""Feature kind 'session': derived labels, no model input (schema.py says
its keys; table_plan.sessions computes them over the whole log)."""

from mtl.data import schema as sc
from mtl.data.kinds.base import Kind, Rows
from mtl.errors import ConfigError


class SessionKind(Kind):
  spec = sc.Session
  derived = True

  def check(self, where: str, fields: dict) -> dict:
    gap = fields.get('gap', 1800.0)
    if isinstance(gap, bool) or not isinstance(gap, int | float) or gap <= 0:
      raise ConfigError(
        f'{where}.gap is {gap!r}, expected a number > 0 (in the time '
        "column's unit)"
      )
    return fields

  def inputs(self, f, schema):
    return [], []

  def encode(self, f, rows: Rows):
    return [], []

  def given(self, f) -> list[str]:
    return []
