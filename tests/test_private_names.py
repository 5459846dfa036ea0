"""No module of mtl uses another module's private names.

A name that starts with one underscore is its module's (or its class's)
own: another module neither imports it (`from m import _x`) nor reaches it
through what it imported (`m._x`, `m.Class._x`, `Class._x`, where `m` is
an imported module and `Class` a name imported from another module). What
a module does with its own objects (`self._x`, `cls._x`, `other._x` of
its own class) is its business and is not looked at.

Oracle: the source itself, read with `ast` (no import runs); the checker
is tried on hand-written snippets that must, and must not, be flagged.
"""

import ast
import pathlib

import pytest

from tests import syntax_trees

MTL = pathlib.Path(__file__).resolve().parents[1] / 'mtl'

# Public by contract although spelt with an underscore: namedtuple's API.
NAMEDTUPLE = {'_replace', '_fields', '_asdict', '_make', '_field_defaults'}
# (module path, dotted access) that are knowingly allowed, each with why.
EXCEPTIONS = {
  # The standard library's placeholder for threads it did not start
  # (orbax's); there is no public name for the class.
  ('mtl/shell/storage_faults.py', 'threading._DummyThread'),
}


def _private(name: str) -> bool:
  return (
    name.startswith('_')
    and not name.startswith('__')
    and name not in NAMEDTUPLE
  )


def _imported(tree: ast.AST) -> set[str]:
  """The names a module binds by importing: modules (`import a.b as m`,
  `from a import m`) and what it imports from other modules."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        names.add(a.asname or a.name.split('.')[0])
    elif isinstance(node, ast.ImportFrom):
      names |= {a.asname or a.name for a in node.names if a.name != '*'}
  return names


def _dotted(node: ast.Attribute) -> list[str] | None:
  """['m', 'Class', '_x'] of `m.Class._x`; None unless rooted at a name."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  return [node.id, *reversed(parts)]


def violations(source: str, where: str = '<snippet>') -> list[str]:
  """Each use of another module's private name in `source`, as
  '<where>:<line>: <what>'."""
  tree = syntax_trees.parse(source)
  imported = _imported(tree)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
      for a in node.names:
        if _private(a.name):
          found.append(
            f'{where}:{node.lineno}: from {node.module} import {a.name}'
          )
    elif isinstance(node, ast.Attribute):
      parts = _dotted(node)
      if parts is None or parts[0] not in imported:
        continue
      # Only the outermost attribute of a chain is reported, once.
      if any(_private(p) for p in parts[1:]) and _private(parts[-1]):
        dotted = '.'.join(parts)
        if (where, dotted) not in EXCEPTIONS:
          found.append(f'{where}:{node.lineno}: {dotted}')
  return found


@pytest.mark.parametrize(
  'source',
  [
    'from mtl.data import table as tl\ntl._dataset(1)',
    'import mtl.data.scale\nmtl.data.scale._history_text(h)',
    'from mtl.data.table import Table\nTable._dense_raw(t)',
    'from mtl.data import table\ntable.Table._dense(t)',
    'from mtl.data.scale import _history_text',
    'def f():\n  from mtl.data import scale\n  return scale._history_text(h)',
    'import threading\nthreading._DummyThread',
  ],
)
def test_the_checker_flags_another_modules_private_names(source):
  assert len(violations(source)) == 1


@pytest.mark.parametrize(
  'source',
  [
    'class A:\n  def f(self, other):\n    return self._x + other._x',
    'class A:\n  @classmethod\n  def f(cls):\n    return cls._x',
    'from mtl.core import train_state\nstate._replace(step=1)',
    'import collections\nP = collections.namedtuple("P", "a")\nP._fields',
    'from mtl.data import table\ntable.load_table.__doc__',
    'def _own():\n  pass\n_own()',
  ],
)
def test_the_checker_leaves_own_and_public_names_alone(source):
  assert violations(source) == []


def test_no_module_uses_another_modules_private_names():
  found = []
  for path in sorted(MTL.rglob('*.py')):
    where = str(path.relative_to(MTL.parent))
    found += violations(path.read_text(), where)
  assert not found, '\n'.join(found)


def test_every_exception_is_still_needed():
  for where, dotted in EXCEPTIONS:
    source = (MTL.parent / where).read_text()
    assert dotted in source, f'{where} no longer uses {dotted}: drop it'
