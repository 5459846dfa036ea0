"""The bad-input corpus's config cases through the real command line.

The cases and what each asserts are in tests/bad_input_corpus.py; one file
per kind, so pytest-xdist runs the kinds on different workers.
"""

import pytest

from tests import bad_input_corpus as corpus_lib

NAMES = sorted(n for n in corpus_lib.CASES if n.startswith('config:'))


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory, data_dir):
  return corpus_lib.run('config', tmp_path_factory, data_dir)


@pytest.mark.parametrize('name', NAMES)
def test_case(outcomes, name):
  corpus_lib.check(outcomes, name)


def test_the_corpus_has_forty_cases_of_every_kind():
  kinds = [name.split(':')[0] for name in corpus_lib.CASES]
  assert set(kinds) == {'config', 'data', 'workdir'}
  for kind in set(kinds):
    assert kinds.count(kind) >= 40, (kind, kinds.count(kind))
  # The warning cases and CRLF + BOM, which work.
  assert sum(c.code == 0 for c in corpus_lib.CASES.values()) == 4
