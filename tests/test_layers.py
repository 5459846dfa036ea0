"""The layout is the architecture: the pure core imports nothing from the
shell or the search tools, and no module import cycle exists.

Oracle: the import statements themselves, read with `ast` (no import runs).
"""

import ast
import pathlib

from tests import syntax_trees

MTL = pathlib.Path(__file__).resolve().parents[1] / 'mtl'


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(MTL.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: pathlib.Path, *, top_level_only: bool) -> set[str]:
  tree = syntax_trees.parse(path.read_text())
  nodes = tree.body if top_level_only else ast.walk(tree)
  out = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith('mtl')}
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
      'mtl'
    ):
      for a in node.names:
        full = f'{node.module}.{a.name}'
        out.add(
          full
          if (MTL.parent / full.replace('.', '/')).exists()
          or (MTL.parent / (full.replace('.', '/') + '.py')).exists()
          else node.module
        )
  return out


MODULES = {_module(p): p for p in MTL.rglob('*.py')}


def test_core_imports_nothing_from_the_shell_or_search():
  bad = {
    name: sorted(
      i
      for i in _imports(path, top_level_only=False)
      if i.startswith(('mtl.shell', 'mtl.search'))
    )
    for name, path in MODULES.items()
    if name.startswith('mtl.core')
  }
  assert not {k: v for k, v in bad.items() if v}


def test_data_imports_nothing_from_the_shell_or_search():
  for name, path in MODULES.items():
    if name.startswith('mtl.data'):
      found = _imports(path, top_level_only=False)
      assert not [i for i in found if i.startswith(('mtl.shell', 'mtl.search'))]


def test_no_import_cycles():
  graph = {
    name: {i for i in _imports(path, top_level_only=True) if i in MODULES}
    for name, path in MODULES.items()
  }
  # A package imports its parent package's __init__ implicitly; only the
  # explicit module graph is checked. Depth-first search for a back edge.
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        cycle = stack[stack.index(nxt) :] + [nxt]
        raise AssertionError('import cycle: ' + ' -> '.join(cycle))
      if nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_the_check_sees_a_cycle():
  """The cycle search is not vacuous: the graph has edges to walk."""
  edges = sum(
    len(_imports(p, top_level_only=True) & set(MODULES))
    for p in MODULES.values()
  )
  assert edges > 50
