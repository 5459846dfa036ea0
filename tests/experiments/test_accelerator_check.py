"""experiments/accelerator_check.py --smoke: one results file, every part.

Oracles: the AUCs of the stored CPU reference (this machine is a CPU, so the
smoke run must reproduce them within the script's tolerance; the suite's
-O0 changes only the last float bits), the timing identities worked out by
hand (examples/s = K x batch / (ms per step / 1000)), and the sizes the
smoke mode promises.
"""

import json

import pytest
from absl import flags

from experiments import accelerator_check as ac


@pytest.fixture
def parsed_flags():
  yield flags.FLAGS
  flags.FLAGS.unparse_flags()


def test_smoke_writes_every_part(tmp_path, census_tfds_dir, parsed_flags):
  out = tmp_path / 'check'
  parsed_flags(
    ['accelerator_check', '--smoke', f'--data_dir={census_tfds_dir}']
    + [f'--out={out}']
  )
  ac.main([])  # Exits 1 if the AUCs are off.
  record = json.loads(out.with_suffix('.json').read_text())
  markdown = out.with_suffix('.md').read_text()
  assert record['smoke'] is True
  assert record['device']['backend'] == 'cpu'
  timed = [r for r in record['throughput'] if not r.get('n/a')]
  assert [r['batch_size'] for r in timed] == list(ac.BATCH_SIZES)
  assert all(r['dtype'] == 'float32' for r in timed)
  # No config.precision: bfloat16 is recorded as not measured.
  assert [r['dtype'] for r in record['throughput'] if r.get('n/a')] == [
    'bfloat16'
  ] * len(ac.BATCH_SIZES)
  pop = record['population']
  assert [r['members'] for r in pop] == list(ac.SMOKE['population'])
  for r in timed + pop:
    per_s = r['members'] * r['batch_size'] / (r['ms_per_step'] / 1e3)
    assert r['examples_per_s'] == pytest.approx(per_s, rel=1e-9)
  assert pop[0]['x_sequential'] == 1.0
  # K = 1 is the single run's program: the batch-1024 throughput row.
  assert pop[0]['examples_per_s'] == timed[0]['examples_per_s']
  assert pop[1]['x_sequential'] == pytest.approx(
    pop[1]['examples_per_s'] / pop[0]['examples_per_s']
  )
  sparse = record['sparse']
  assert [r['rows'] for r in sparse] == list(ac.SMOKE['sparse_rows'])
  assert all(r['method'] == 'lazy_adam' and r['in_place'] for r in sparse)
  auc = record['auc']
  assert auc['ok'] and auc['tolerance'] == ac.SMOKE_TOLERANCE
  for key, ref in ac.SMOKE_REFERENCE.items():
    row = auc['aucs'][key]
    assert row['reference'] == ref
    # A CPU reproduces its own reference far inside the tolerance.
    assert abs(row['value'] - ref) < 2e-3, (key, row)
  assert 'within 0.06 of the CPU reference' in markdown
  assert '| 8192 | bfloat16 | n/a | n/a | n/a |' in markdown
