"""The bad-input corpus's workdir cases through the real command line.

The cases and what each asserts are in tests/bad_input_corpus.py; one file
per kind, so pytest-xdist runs the kinds on different workers.
"""

import pytest

from tests import bad_input_corpus as corpus_lib

NAMES = sorted(n for n in corpus_lib.CASES if n.startswith('workdir:'))


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory, data_dir):
  return corpus_lib.run('workdir', tmp_path_factory, data_dir)


@pytest.mark.parametrize('name', NAMES)
def test_case(outcomes, name):
  corpus_lib.check(outcomes, name)
