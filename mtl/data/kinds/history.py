"""Feature kind 'history': each row's user's earlier items, embedded with
the item's table (schema.py says its keys). Derived over the whole log:
table_plan.Plan when the data is prepared, derived.Derived for given rows
(history_tails.py); each user's last items are kept with the encoding."""

from mtl.data import schema as sc
from mtl.data.kinds.base import Kind, Rows, own_table


class Tails:
  """Each user's latest items over the log (the plan's), for prediction."""

  def __init__(self, plan):
    self.plan = plan

  def update(self, rows: Rows) -> None:
    pass

  def merge(self, other: 'Tails') -> None:
    pass

  def __getstate__(self):  # Sent between processes without the plan.
    return {**self.__dict__, 'plan': None}

  def finish(self) -> dict:
    return {'histories': {n: h['tails'] for n, h in self.plan.history.items()}}


class HistoryKind(Kind):
  spec = sc.History
  derived = True

  def fitter(self, features, schema, plan):
    return Tails(plan)

  def inputs(self, f, schema):
    return [], [f'{f.name}[{j}]' for j in range(f.max_len)]

  def embedding(self, f, schema, encoding):
    return own_table(f, schema, encoding, f.pooling)

  def encode(self, f, rows: Rows):
    return [], [rows.derived(f)]

  def given(self, f) -> list[str]:
    # A '|'-separated column of the user's earlier items, oldest first, or
    # derived from the row's user, time and item (derived.py).
    return [f.name]
