"""ast.parse for the tests that read the source: `parse`."""

import ast


def parse(source: str) -> ast.AST:
  """ast.parse, again if CPython 3.11 raises its spurious SystemError 'AST
  constructor recursion depth mismatch': its tree conversion keeps the
  depth in state shared by all threads, and a thread another test of this
  worker left running can convert a tree at the same time. A real syntax
  or recursion error repeats and is raised."""
  for _ in range(4):
    try:
      return ast.parse(source)
    except SystemError as e:
      if 'recursion depth mismatch' not in str(e):
        raise
  return ast.parse(source)
