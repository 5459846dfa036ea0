"""The bad-input corpus: config, data, workdir and checkpoint faults, each
through the real command line (`mtl-train`, and for a trained run's files
`mtl-eval`, `mtl-predict` and `mtl-export`: a fresh process forked by
tests/cli.py), run by tests/test_bad_input_corpus_<kind>.py, one file per
kind (at least 40 cases each).

Every error case asserts exit code 2, one stderr line `<command>: error:`
naming the problem (key, file, row, directory), no traceback, and that a
finished run's workdir the case points at (a private copy per case) is
byte for byte what it was (mtl-predict cases: no output file either). A
diverged run (exit 3) also ends on one error line, and its case checks what
was (not) written. Warning cases (a damaged cache rebuilt from the raw
files, a corrupt newest checkpoint skipped) assert exit code 0, the
warning, and what the run then did; a file with CRLF line endings and a
byte order mark trains (exit 0) on the arrays of the plain file. Data cases
use the Ali-CCP sample's layout or docs/data.md's example file
(configs/example_table.py, 120 rows); most fail while the file is read.
A kind's cases run two at a time in one module fixture (`run`); each is
then its own test (`check`). Cases that tests/test_bad_input,
tests/test_cli_errors, tests/test_main and tests/test_after_training
already cover in process or through the CLI are left out. The rules of
mtl/shell/validate.py are tested in process in
tests/shell/test_validate_rules.py.
Not here: permission faults (chmod 000, an unwritable workdir), which root
ignores (tests/shell/test_workdir.py drops to nobody for its one), and a full
disk (tests/shell/test_disk_full.py).
"""

import dataclasses
import fcntl
import hashlib
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from concurrent import futures

import pytest

from configs import ali_ccp, aliexpress
from mtl.data import DATASETS
from mtl.errors import DataError
from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = [
  '--config=configs/smoke.py',
  '--config.checkpoint.every_steps=4',  # steps 8, 12, 16 kept
  '--config.checkpoint.async_save=false',
]
NAN = float('nan')


@dataclasses.dataclass
class Case:
  """args: the command line after --workdir; `{key}` is filled from the
  case's context. setup(ctx) prepares files and returns more context."""

  args: list[str]
  expect: list[str]  # substrings of the error (or warning) line
  code: int = 2
  workdir: str = 'copy'  # 'copy' of the finished run, or 'fresh'
  setup: Callable | None = None
  alone: bool = True  # the error is the only stderr line
  # The run got past loading the state, where the workdir records an
  # allowed change (num_epochs) in config.json and fingerprint.json.
  rerecords: bool = False
  check: Callable | None = None  # more assertions: check(proc, ctx)
  tool: str = 'mtl-train'  # or mtl-eval, mtl-predict, mtl-export (TOOLS)


def _smoke(*overrides, arg=''):
  config = [f'--config=configs/smoke.py{arg}'] if arg else []
  return (config or SMOKE[:1]) + SMOKE[1:] + list(overrides)


def _config_file(source: str):
  """A case whose config file sets what no override can (nan, a bool)."""

  def setup(ctx):
    path = ctx['tmp'] / 'config.py'
    path.write_text(
      'from configs import smoke\n\n\ndef get_config():\n'
      '  c = smoke.get_config()\n'
      '  c.checkpoint.every_steps = 4\n'
      '  c.checkpoint.async_save = False\n'
      '  with c.unlocked():\n'
      f'    {source}\n'
      '  return c\n'
    )
    return {'config': path}

  return setup


def _bad(key, value, *expect, arg=''):
  return Case(_smoke(f'--config.{key}={value}', arg=arg), list(expect))


# A data-parallel run with the one shared table split by rows.
SPLIT = (
  '--config.parallel.num_devices=2',
  '--config.parallel.backend=shard_map',
  '--config.input_mode=host',
  "--config.parallel.sharding.rows=('table',)",
)

CONFIG = {
  'model.num_experts=0': _bad(
    'model.num_experts', 0, 'model.num_experts is 0, expected >= 1'
  ),
  'model.dropout=1.5': _bad(
    'model.dropout', 1.5, 'model.dropout is 1.5, expected a number in [0, 1)'
  ),
  'towers.dropout<0': _bad(
    'towers.dropout', -0.1, 'towers.dropout is -0.1, expected a number in'
  ),
  'expert_hidden empty': _bad(
    'model.expert_hidden',
    '()',
    'model.expert_hidden is (), expected at least one value',
  ),
  'expert_hidden width 0': _bad(
    'model.expert_hidden', '(8,0)', 'model.expert_hidden[1] is 0, expected >= 1'
  ),
  'towers.hidden width<0': _bad(
    'towers.hidden', '(4,-1)', 'towers.hidden[1] is -1, expected >= 1'
  ),
  'embedding.dim=0': _bad(
    'embedding.dim', 0, 'embedding.dim is 0, expected >= 1'
  ),
  'batch_size=0': _bad('batch_size', 0, 'batch_size is 0, expected >= 1'),
  'eval_batch_size=0': _bad(
    'eval_batch_size', 0, 'eval_batch_size is 0, expected >= 1'
  ),
  'log_every_steps=0': _bad(
    'log_every_steps', 0, 'log_every_steps is 0, expected >= 1'
  ),
  'eval_every_epochs=0': _bad(
    'eval_every_epochs', 0, 'eval_every_epochs is 0, expected >= 1'
  ),
  'max_consecutive_nonfinite=0': _bad(
    'max_consecutive_nonfinite',
    0,
    'max_consecutive_nonfinite is 0, expected >= 1',
  ),
  'checkpoint.max_to_keep=0': _bad(
    'checkpoint.max_to_keep', 0, 'checkpoint.max_to_keep is 0, expected >= 1'
  ),
  'population.size<0': _bad(
    'population.size', -1, 'population.size is -1, expected >= 0'
  ),
  'num_auc_bins=1': _bad('num_auc_bins', 1, 'num_auc_bins is 1, expected >= 2'),
  'learning_rate=inf': _bad(
    'optimizer.learning_rate',
    'inf',
    'optimizer.learning_rate is inf, expected a finite number > 0',
  ),
  'learning_rate=0': _bad(
    'optimizer.learning_rate',
    0.0,
    'optimizer.learning_rate is 0.0, expected a number > 0',
  ),
  'weight_decay<0': Case(
    _smoke(
      '--config.optimizer.name=adamw', '--config.optimizer.weight_decay=-1'
    ),
    ['optimizer.weight_decay is -1.0, expected a number >= 0'],
  ),
  'weight_decay without adamw': _bad(
    'optimizer.weight_decay',
    0.1,
    "optimizer.weight_decay is 0.1 with optimizer 'adam', expected 0",
  ),
  'grad_clip_norm<0': _bad(
    'optimizer.grad_clip_norm',
    -1.0,
    'optimizer.grad_clip_norm is -1.0, expected a number >= 0',
  ),
  'warmup_steps<0': _bad(
    'optimizer.warmup_steps', -1, 'optimizer.warmup_steps is -1, expected >= 0'
  ),
  'unknown schedule': _bad(
    'optimizer.schedule',
    'cosin',
    "optimizer.schedule 'cosin' is not one of constant, cosine (did you "
    "mean 'cosine'?)",
  ),
  'unknown wandb.mode': _bad(
    'wandb.mode', 'on', "wandb.mode 'on' is not one of disabled, offline"
  ),
  'parallel.num_devices<0': _bad(
    'parallel.num_devices', -1, 'parallel.num_devices is -1, expected >= 0'
  ),
  # Embedding tables split by rows (mtl/shell/sharding.py).
  'parallel.sharding.min_bytes<0': _bad(
    'parallel.sharding.min_bytes',
    -1,
    'parallel.sharding.min_bytes is -1, expected >= 0',
  ),
  'parallel.sharding.rows not names': _bad(
    'parallel.sharding.rows', '(1,)', 'parallel.sharding.rows[0] is 1'
  ),
  'parallel.sharding misspelt': _bad(
    'parallel.sharding.row', "('table',)", 'parallel.sharding.row'
  ),
  'sharding on pmap': Case(
    _smoke(*SPLIT, '--config.parallel.backend=pmap'),
    [
      'parallel.sharding (embedding tables split by rows) needs '
      "parallel.backend=shard_map, found 'pmap'"
    ],
  ),
  'sharding on one device': Case(
    _smoke(*SPLIT, '--config.parallel.num_devices=1'),
    ['is set with parallel.num_devices=1, expected a data-parallel run'],
  ),
  'sharding a population': Case(
    _smoke(*SPLIT, '--config.population.size=2'),
    ['is set with a population, expected a single run'],
  ),
  'divergence_factor<0': _bad(
    'divergence_factor', -1.0, 'divergence_factor is -1.0, expected a number'
  ),
  'PLE without experts': Case(
    _smoke(
      '--config.model.num_specific_experts=0',
      '--config.model.num_shared_experts=0',
      arg=':ple',
    ),
    [
      'model.num_specific_experts 0 + model.num_shared_experts 0 is 0 '
      'experts, expected at least 1'
    ],
  ),
  'PLE num_levels=0': _bad(
    'model.num_levels', 0, 'model.num_levels is 0, expected >= 1', arg=':ple'
  ),
  'AITM calibration<0': Case(
    [
      '--config=configs/ali_ccp.py:aitm',
      '--config.model.calibration=-1.0',
    ],
    ['model.calibration is -1.0, expected a number >= 0'],
  ),
  'gradnorm alpha<0': Case(
    _smoke(
      '--config.weighting_name=gradnorm', '--config.weighting.gradnorm.alpha=-1'
    ),
    ['weighting.gradnorm.alpha is -1.0, expected >= 0'],
  ),
  'dwa window_steps=0': Case(
    _smoke(
      '--config.weighting_name=dwa', '--config.weighting.dwa.window_steps=0'
    ),
    ['weighting.dwa.window_steps is 0, expected >= 1'],
  ),
  'population.weighting value': Case(
    _smoke(
      '--config.weighting_name=gradnorm',
      '--config.population.weighting.alpha=(1.0,-2.0)',
    ),
    ['population.weighting.alpha[1]: weighting.gradnorm.alpha is -2.0'],
  ),
  'aliexpress validation_fraction': Case(
    [
      '--config=configs/aliexpress.py:esmm',
      '--config.dataset.validation_fraction=1.5',
    ],
    ['dataset.validation_fraction is 1.5, expected a number in [0, 1)'],
  ),
  'nan learning rate in a config file': Case(
    ['--config={config}'],
    ['optimizer.learning_rate is nan, expected a finite number > 0'],
    setup=_config_file("c.optimizer.learning_rate = float('nan')"),
  ),
  'nan in a weighting tuple in a config file': Case(
    ['--config={config}', '--config.weighting_name=fixed'],
    ['weighting.fixed.weights[1] is nan, expected a finite number'],
    setup=_config_file("c.weighting.fixed.weights = (1.0, float('nan'))"),
  ),
  'inf in a dataset keyword in a config file': Case(
    ['--config={config}'],
    ['dataset.noise_std is inf, expected a finite number'],
    setup=_config_file("c.dataset.noise_std = float('inf')"),
  ),
  'a bool for a count in a config file': Case(
    ['--config={config}'],
    ['batch_size is True (a bool), expected an int >= 1'],
    setup=_config_file('c.batch_size = True'),
  ),
  'a float width in a config file': Case(
    ['--config={config}'],
    ['model.expert_hidden[0] is 8.5 (a float), expected an int'],
    setup=_config_file('c.model.expert_hidden = (8.5,)'),
  ),
  'a string for a float in a config file': Case(
    ['--config={config}'],
    [
      "{config}: Could not override field 'learning_rate' (reference). 0.1 "
      "is of original type <class 'str'> and cannot be casted to type "
      "<class 'float'> (TypeError at {config} line 9)"
    ],
    setup=_config_file("c.optimizer.learning_rate = '0.1'"),
  ),
  'unknown select_best': _bad(
    'select_best',
    'bset',
    "select_best 'bset' is not one of first, last, mean, per_task",
  ),
  'early_stopping.patience<0': _bad(
    'early_stopping.patience',
    -1,
    'early_stopping.patience is -1, expected >= 0',
  ),
  "a table feature's kind misspelt": Case(
    [
      '--config=configs/example_table.py',
      '--config.dataset.features.price.kind=dens',
    ],
    [
      "dataset.features.price.kind is 'dens', expected one of dense, "
      "categorical, sequence, history, session, count (did you mean 'dense'?)"
    ],
    workdir='fresh',  # the dataset's schema is checked after the workdir
  ),
  "a table task's kind misspelt": Case(
    [
      '--config=configs/example_table.py',
      '--config.dataset.tasks.dwell.kind=regresion',
    ],
    [
      "dataset.tasks.dwell.kind is 'regresion', expected one of binary, "
      "regression, weighted_logistic (did you mean 'regression'?)"
    ],
    workdir='fresh',  # the dataset's schema is checked after the workdir
  ),
  'a sequence feature of max_len 0': Case(
    [
      '--config=configs/example_table.py',
      '--config.dataset.features.tags.max_len=0',
    ],
    ['dataset.features.tags.max_len is 0, expected an int >= 1'],
    workdir='fresh',  # the dataset's schema is checked after the workdir
  ),
  # Adam at lr 1e3: finite losses (~1e19), validation mse ~3e6 (1.35e6x the
  # first training loss); SGD's losses go non-finite: both end with exit 3.
  'Adam diverging with finite losses': Case(
    _smoke('--config.optimizer.learning_rate=1e3'),
    [
      "validation mse of task 'y1' is ",
      'at epoch 1, ',
      'x its first training loss ',
      '(divergence_factor=1000): the run diverged; lower '
      'optimizer.learning_rate; the checkpoint of step 4 is kept',
    ],
    code=3,
    workdir='fresh',
    alone=False,  # the training losses' warnings come first
    check=lambda proc, ctx: _stopped_at_the_evaluation(ctx),
  ),
}


def _stopped_at_the_evaluation(ctx):
  """The diverged epoch was neither selected, saved nor reported: the
  checkpoint of step 4 (every_steps=4) stays, none of the epoch's end (8)."""
  workdir = ctx['workdir']
  assert not (workdir / 'results.json').exists()
  saved = {
    name: sorted(p.name for p in (workdir / name).glob('*') if p.name.isdigit())
    for name in ('checkpoints', 'checkpoints_best')
  }
  assert saved == {'checkpoints': ['4'], 'checkpoints_best': []}, saved


# --- data: small CSVs in tmp, Ali-CCP's and AliExpress' 'full' layout -----

FILES = {'train': 'path', 'validation': 'validation_path', 'test': 'test_path'}


def _ali_ccp(*overrides, raw='{raw}', variant='full'):
  return [
    '--config=configs/ali_ccp.py:shared_bottom',
    f'--config.dataset.variant={variant}',
    f'--config.dataset.manual_dir={raw}',
    '--config.dataset.data_dir={tfds}',
    '--config.num_epochs=1',
    '--config.progress_bar=false',
    *overrides,
  ]


def _raw_files(ctx, edit=None, split='train', variant='full'):
  """The Ali-CCP sample as the `variant` files under ctx['tmp']/raw, one of
  them edited (bytes -> bytes; the 'full' files have no checksums)."""
  raw = ctx['tmp'] / 'raw'
  raw.mkdir(exist_ok=True)
  for s, key in FILES.items():
    data = (ctx['sample'] / ali_ccp.VARIANTS['sample'][key]).read_bytes()
    if edit is not None and s == split:
      data = edit(data)
    (raw / ali_ccp.VARIANTS[variant][key]).write_bytes(data)
  return {'raw': raw, 'tfds': ctx['tmp'] / 'tfds'}


def _csv_case(edit, expect, split='train', file=None):
  name = file or ali_ccp.VARIANTS['full'][FILES[split]]

  def setup(ctx):
    found = _raw_files(ctx, edit, split)
    found['file'] = found['raw'] / name
    return found

  return Case(
    _ali_ccp(), [f'{{file}}: {e}' for e in expect], workdir='fresh', setup=setup
  )


def _lines(data: bytes) -> list[bytes]:
  return data.split(b'\n')


def _set_field(data: bytes, row: int, column: str, value: bytes) -> bytes:
  lines = _lines(data)
  header = lines[0].decode().split(',')
  fields = lines[row].split(b',')
  fields[header.index(column)] = value
  lines[row] = b','.join(fields)
  return b'\n'.join(lines)


def _offset(data: bytes, row: int, column: str) -> int:
  """The byte offset of data row `row`'s field `column` (an oracle)."""
  lines = _lines(data)
  start = sum(len(x) + 1 for x in lines[:row])
  header = lines[0].decode().split(',')
  before = lines[row].split(b',')[: header.index(column)]
  return start + sum(len(f) + 1 for f in before)


def _utf8_case():
  def setup(ctx):
    train = ali_ccp.VARIANTS['sample']['path']
    sample = (ctx['sample'] / train).read_bytes()
    found = _raw_files(
      ctx, lambda d: _set_field(d, 5, 'D508', b'1.5\xff'), 'train'
    )
    found['file'] = found['raw'] / 'ali_ccp_train.csv'
    found['offset'] = _offset(sample, 5, 'D508') + 3
    return found

  return Case(
    _ali_ccp(),
    [
      "{file}: row 5 column 'D508' (byte offset {offset}) has byte 0xff, "
      'which is not UTF-8'
    ],
    workdir='fresh',
    setup=setup,
  )


def _version(tfds) -> pathlib.Path:
  """The prepared Ali-CCP table's directory under a data_dir."""
  (version,) = (tfds / 'table').glob('ali_ccp-*/1.0.0')
  return version


def _prepared(ctx, *, keep_raw: bool, damage=None):
  """A prepared cache of the checksummed sample (copied from the module's:
  the sample's files are known by their sums, wherever they lie), `damage`d
  in its directory, with or without the raw files."""
  found = _raw_files(ctx, variant='sample')
  shutil.copytree(ctx['cache'], found['tfds'])
  version = _version(found['tfds'])
  if damage is not None:
    damage(version)
  if not keep_raw:
    shutil.rmtree(found['raw'])
  return {**found, 'dir': version}


def _truncate(version):
  record = next(version.glob('table-train.array_record*'))
  record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])


def _garbage_record(version):
  record = next(version.glob('table-test.array_record*'))
  record.write_bytes(os.urandom(record.stat().st_size))


def _cache_case(damage, problem):
  return Case(
    _ali_ccp(variant='sample'),
    [
      'ali_ccp: the prepared data in {dir} cannot be used (' + problem,
      'the raw files to prepare it again are missing',
      'delete {dir} and prepare it again',
    ],
    workdir='fresh',
    setup=lambda ctx: _prepared(ctx, keep_raw=False, damage=damage),
  )


def _rebuilt(proc, ctx):
  warned = [x for x in proc.stderr.splitlines() if 'cannot be used' in x]
  assert len(warned) == 1 and str(ctx['dir']) in warned[0], proc.stderr
  assert 'preparing it again from the raw files' in warned[0]
  assert (ctx['workdir'] / 'results.json').is_file()
  assert (ctx['dir'] / 'dataset_info.json').is_file()


def _load_ali_ccp(**kwargs):
  config = ali_ccp.get_config().dataset.to_dict()
  return DATASETS['table'](**{**config, **kwargs})


def _stale_cache(ctx):
  """A cache prepared from raw files whose test split had one click class
  (it fails validation), then the raw files fixed, with the size and time
  of the broken ones (so the cache is the same one)."""
  found = _raw_files(ctx, lambda d: _set_column(d, 'click', b'0'), 'test')
  stats = {p: p.stat() for p in found['raw'].iterdir()}
  with pytest.raises(DataError, match='labels are all 0'):
    _load_ali_ccp(
      variant='full', manual_dir=str(found['raw']), data_dir=str(found['tfds'])
    )
  _raw_files(ctx)  # Fixed.
  for path, stat in stats.items():
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  return {**found, 'dir': _version(found['tfds'])}


def _set_column(data: bytes, column: str, value: bytes) -> bytes:
  lines = _lines(data)
  index = lines[0].decode().split(',').index(column)
  for i in range(1, len(lines)):
    if lines[i]:
      fields = lines[i].split(b',')
      fields[index] = value
      lines[i] = b','.join(fields)
  return b'\n'.join(lines)


def _aliexpress_one_row(ctx):
  raw = ctx['tmp'] / 'raw'
  raw.mkdir()
  sample = ctx['sample'].parent / 'aliexpress-sample'
  files = aliexpress.VARIANTS['sample']
  train = (sample / files['path']).read_bytes()
  (raw / 'train.csv').write_bytes(b'\n'.join(_lines(train)[:2]) + b'\n')
  shutil.copy(sample / files['test_path'], raw / 'test.csv')
  return {'raw': raw, 'tfds': ctx['tmp'] / 'tfds'}


DATA = {
  'raw folder missing': Case(
    _ali_ccp(raw='{tmp}/nowhere'),
    ['ali_ccp: file(s) not found: {tmp}/nowhere/ali_ccp_train.csv'],
    workdir='fresh',
    setup=lambda ctx: {'tfds': ctx['tmp'] / 'tfds'},
  ),
  'non-UTF-8 byte in a row': _utf8_case(),
  'non-UTF-8 byte in the header': _csv_case(
    lambda d: b'cl\xffick' + d[5:],
    ['the header, column 1 (byte offset 2) has byte 0xff, which is not UTF-8'],
  ),
  'empty file': _csv_case(lambda d: b'', ['is empty, expected a header']),
  'header only': _csv_case(
    lambda d: _lines(d)[0] + b'\n',
    ['has no data rows, expected some'],
    split='validation',
  ),
  'label not 0 or 1': _csv_case(
    lambda d: _set_field(d, 3, 'click', b'2'),
    ["row 3 column 'click' is '2', expected 0 or 1"],
  ),
  'missing column': _csv_case(
    lambda d: b'\n'.join(x.rsplit(b',', 1)[0] for x in _lines(d) if x),
    ["has no column 'D853' (did you mean '853'?), expected it for the schema"],
  ),
  'row with an extra field': _csv_case(
    lambda d: _set_field(d, 4, 'D853', b'1,2'),
    ['cannot be parsed as CSV: Error tokenizing data'],
  ),
  'one label class in a split': Case(
    _ali_ccp(),
    ["dataset 'ali_ccp' split 'test': task 'click' labels are all 0"],
    workdir='fresh',
    setup=lambda ctx: _raw_files(
      ctx, lambda d: _set_column(d, 'click', b'0'), 'test'
    ),
  ),
  'split with no rows': Case(
    [
      '--config=configs/aliexpress.py:shared_bottom',
      '--config.dataset.variant=full',
      '--config.dataset.manual_dir={raw}',
      '--config.dataset.data_dir={tfds}',
    ],
    ["aliexpress: the 'files' split leaves no validation rows, expected some"],
    workdir='fresh',
    setup=_aliexpress_one_row,
  ),
  'truncated cache, no raw files': _cache_case(
    _truncate, "table: prepared record 0 of split 'train'"
  ),
  'cache without dataset_info.json, no raw files': _cache_case(
    lambda v: (v / 'dataset_info.json').unlink(),
    'it has files but no dataset_info.json',
  ),
  'garbage dataset_info.json, no raw files': _cache_case(
    lambda v: (v / 'dataset_info.json').write_bytes(b'\xff\x00 garbage'),
    'UnicodeDecodeError',
  ),
  'garbage record file, no raw files': _cache_case(
    _garbage_record, 'RuntimeError'
  ),
  'truncated cache rebuilt from the raw files': Case(
    _ali_ccp(variant='sample'),
    [],
    code=0,
    workdir='fresh',
    setup=lambda ctx: _prepared(ctx, keep_raw=True, damage=_truncate),
    check=_rebuilt,
  ),
  'cache of since-fixed raw files rebuilt': Case(
    _ali_ccp(), [], code=0, workdir='fresh', setup=_stale_cache, check=_rebuilt
  ),
  'sequence delimiter that never occurs': Case(
    [
      '--config=configs/example_table.py',
      '--config.dataset.path={file}',
      '--config.dataset.data_dir={tfds}',
      '--config.num_epochs=1',
    ],
    [
      "{file}: sequence feature 'tags' (column 'tags') has delimiter '|', "
      "which occurs in none of its values, but ';' does (e.g. '",
      "'): expected dataset.features.tags.delimiter=';'",
    ],
    workdir='fresh',
    setup=lambda ctx: _semicolon_tags(ctx),
    check=lambda proc, ctx: _nothing_prepared(proc, ctx),
  ),
}


def _semicolon_tags(ctx):
  """docs/data.md's example file with its tags joined by ';', not '|'."""
  from tests.data import test_own_data

  path = ctx['tmp'] / 'interactions.csv'
  df = test_own_data.write_csv(path, n_users=20, per_user=6)
  df['tags'] = df.tags.str.replace('|', ';')
  df.to_csv(path, index=False)
  joined = {t for t in df.tags if isinstance(t, str) and ';' in t}
  return {'file': path, 'tfds': ctx['tmp'] / 'tfds', 'joined': joined}


def _nothing_prepared(proc, ctx):
  """The example is a value of the file; TFDS wrote no split."""
  example = proc.stderr.split("(e.g. '")[1].split("')")[0]
  assert example in ctx['joined'], example
  assert not list(ctx['tfds'].rglob('*.array_record*'))


# --- data: docs/data.md's example file (configs/example_table.py) ---------
# 120 rows (20 users x 6, seed 2: both classes in every split), written per
# case with one fault; most fail while the file is read, before any step.

EXAMPLE = [
  '--config=configs/example_table.py',
  '--config.dataset.path={file}',
  '--config.dataset.data_dir={tfds}',
  '--config.num_epochs=1',
  '--config.progress_bar=false',
]


def _example_frame(path):
  from tests.data import test_own_data

  return test_own_data.write_csv(path, n_users=20, per_user=6, seed=2)


def _example(ctx, edit=None, name='interactions.csv'):
  """The example file at ctx['tmp']/name: `edit`(frame) -> frame or bytes
  (of the plain CSV's bytes), or as written."""
  path = ctx['tmp'] / name
  df = _example_frame(ctx['tmp'] / 'plain.csv')
  if edit is not None:
    out = edit(df, (ctx['tmp'] / 'plain.csv').read_bytes())
    if isinstance(out, bytes):
      path.write_bytes(out)
    else:
      out.to_csv(path, index=False)
  else:
    df.to_csv(path, index=False)
  return {'file': path, 'tfds': ctx['tmp'] / 'tfds'}


def _table_case(
  edit, expect, *overrides, name='interactions.csv', row=None, **kw
):
  """A case of the example file edited by `edit(frame, plain bytes)`; the
  error names {file} (and {row}: the edited cell's 1-based data row, ROW's
  or `row(ctx)`)."""

  def setup(ctx):
    found = _example(ctx, edit, name)
    found['row'] = row(ctx) if row else ROW + 1
    return found

  return Case(
    EXAMPLE + list(overrides),
    [e if e.startswith('{') else f'{{file}}: {e}' for e in expect],
    workdir='fresh',
    setup=setup,
    **kw,
  )


ROW = 9  # The 0-based frame row a _cell fault is written to (data row 10).


def _cell(column, value, clicked=False):
  """Sets one cell (text) of row ROW, or of the first clicked row from ROW
  on (a regression label is read on clicked rows only: 'where')."""

  def edit(df, _):
    df[column] = df[column].astype(object)
    at = ROW
    if clicked:
      at = int(df.index[(df.click == 1) & (df.index >= ROW)][0])
    df.at[at, column] = value
    return df

  return edit


def _first_clicked_row(ctx):
  df = _example_frame(ctx['tmp'] / 'plain.csv')
  return int(df.index[(df.click == 1) & (df.index >= ROW)][0]) + 1


def _clicked_case(column, value, expect):
  return _table_case(
    _cell(column, value, clicked=True),
    [f'row {{row}} column {column!r} {expect}'],
    row=_first_clicked_row,
  )


def _gzip(data: bytes, keep: float = 1.0) -> bytes:
  import gzip

  z = gzip.compress(data * 40)  # Half of it decompresses to many rows.
  return z[: int(len(z) * keep)]


def _example_dataset(path, data_dir):
  from configs import example_table

  config = example_table.get_config().dataset.to_dict()
  return DATASETS['table'](
    **{**config, 'path': str(path), 'data_dir': data_dir}
  )


def _same_arrays(proc, ctx):
  """The run finished, on the arrays of the plain file (so it is the same
  run): its prepared data read back against the plain file's."""
  import numpy as np

  assert (ctx['workdir'] / 'results.json').is_file()
  got = _example_dataset(ctx['file'], str(ctx['tfds']))
  want = ctx['ref']
  assert got.vocab_sizes == want.vocab_sizes
  assert got.splits.keys() == want.splits.keys()
  for split, arrays in want.splits.items():
    for key, value in arrays.items():
      np.testing.assert_array_equal(got.splits[split][key], value)


def _works_like_plain(edit):
  def setup(ctx):
    found = _example(ctx, edit)
    ref = _example_dataset(ctx['tmp'] / 'plain.csv', str(ctx['tmp'] / 'ref'))
    return {**found, 'ref': ref}

  return Case(
    EXAMPLE, [], code=0, workdir='fresh', setup=setup, check=_same_arrays
  )


CATEGORY_RANKS = b'category,cat_rank\nbooks,1\ngarden,2\nmusic,3\nshoes,4\n'


def _joined(side: bytes):
  """The example file with a side table on `category` (a dense cat_rank)."""

  def setup(ctx):
    found = _example(ctx)
    path = ctx['tmp'] / 'categories.csv'
    path.write_bytes(side)
    config = ctx['tmp'] / 'config.py'
    config.write_text(
      'from configs import example_table\n\n\ndef get_config():\n'
      '  c = example_table.get_config()\n'
      '  with c.unlocked():\n'
      f"    c.dataset.joins = {{'cats': {{'path': {str(path)!r}, "
      "'on': 'category'}}\n"
      "    c.dataset.features.cat_rank = {'kind': 'dense'}\n"
      '  return c\n'
    )
    df = _example_frame(ctx['tmp'] / 'plain.csv')
    toys = int(df.index[df.category == 'toys'][0]) + 1
    return {**found, 'side': path, 'config': config, 'toys_row': toys}

  return setup


def _joined_case(side: bytes, expect):
  return Case(
    ['--config={config}'] + EXAMPLE[1:],
    expect,
    workdir='fresh',
    setup=_joined(side),
  )


TABLE = {
  'binary label is text': _table_case(
    _cell('click', 'yes'),
    [
      "row {row} column 'click' is 'yes', expected a finite number (the "
      "label of task 'click')"
    ],
  ),
  'binary label is empty': _table_case(
    _cell('click', ''),
    ["row {row} column 'click' is empty, expected a finite number"],
  ),
  'binary label is 0.5': _table_case(
    _cell('click', '0.5'),
    ["row {row} column 'click' is '0.5', expected 0 or 1 (binary task 'click'"],
  ),
  'regression label is text': _clicked_case(
    'dwell_s', 'long', "is 'long', expected a finite number"
  ),
  'regression label is empty where its task is read': _clicked_case(
    'dwell_s',
    '',
    "is empty, expected a finite number (the label of task 'dwell')",
  ),
  'negative dense value under log1p': _table_case(
    _cell('price', '-5'),
    ["row {row} column 'price' is -5, expected a number > -1 (normalize log1p"],
  ),
  'infinite dense value': _table_case(
    _cell('price', 'inf'),
    ["row {row} column 'price' is 'inf', expected a finite number"],
  ),
  'dense value that overflows float64': _table_case(
    _cell('price', '1e400'),
    ["row {row} column 'price' is '1e400', expected a finite number"],
  ),
  'dense value is text': _table_case(
    _cell('price', 'cheap'),
    ["row {row} column 'price' is 'cheap', expected a finite number"],
  ),
  "split's time column is text": _table_case(
    _cell('ts', 'yesterday'),
    ["row {row} column 'ts' is 'yesterday', expected a finite number"],
  ),
  "split's time column is empty": _table_case(
    _cell('ts', ''),
    ["row {row} column 'ts' is empty, expected a finite number"],
  ),
  "split's user column is empty": _table_case(
    _cell('user_id', ''),
    ["row {row} column 'user_id' is empty, expected a value"],
  ),
  'duplicated header name': _table_case(
    lambda df, _: df.assign(extra=1.0).rename(columns={'extra': 'price'}),
    [
      "the header names column 'price' twice (columns 4 and 10), expected "
      'distinct names'
    ],
  ),
  'tab-separated file named .csv': _table_case(
    lambda _, d: d.replace(b',', b'\t'),
    ["has no column 'category', expected it for the schema"],
  ),
  'a row with semicolons among commas': _table_case(
    lambda _, d: b'\n'.join(
      x.replace(b',', b';') if i == 5 else x for i, x in enumerate(_lines(d))
    ),
    ["row 5 column 'item_id' is empty, expected a value"],
  ),
  'unbalanced quote': _table_case(
    lambda _, d: d.replace(b'shoes', b'"shoes', 1),
    [
      'cannot be parsed as CSV: Error tokenizing data. C error: EOF inside '
      'string'
    ],
  ),
  'truncated gzip file': _table_case(
    lambda _, d: _gzip(d, keep=0.5),
    [
      'cannot be decompressed (Compressed file ended before the '
      'end-of-stream marker was reached), expected a whole gzip file'
    ],
    name='interactions.csv.gz',
  ),
  'plain text named .gz': _table_case(
    lambda _, d: d,
    [
      "cannot be decompressed (Not a gzipped file (b'us')), expected a "
      'whole gzip file'
    ],
    name='interactions.csv.gz',
  ),
  'CSV named .parquet': _table_case(
    lambda _, d: d,
    ['is not a Parquet file (Parquet magic bytes not found'],
    name='interactions.parquet',
  ),
  'empty .parquet file': _table_case(
    lambda _, d: b'',
    ['is not a Parquet file (Parquet file size is 0 bytes)'],
    name='interactions.parquet',
  ),
  'unknown file extension': _table_case(
    lambda _, d: d,
    [
      'cannot tell its format from its name, expected a .csv, .tsv '
      '(optionally .gz) or .parquet file'
    ],
    name='interactions.json',
  ),
  'a directory where the file is expected': Case(
    EXAMPLE,
    ['example: file(s) not found: {file}'],
    workdir='fresh',
    setup=lambda ctx: {
      'file': _mkdir(ctx['tmp'] / 'interactions.csv'),
      'tfds': ctx['tmp'] / 'tfds',
    },
  ),
  'user_last split leaves no training rows': Case(
    EXAMPLE,
    ["example: the 'user_last' split leaves no train rows, expected some"],
    workdir='fresh',
    setup=lambda ctx: _example(
      ctx, lambda df, _: df.groupby('user_id').head(1)
    ),
  ),
  "task 'where' names a column the file lacks": _table_case(
    None,
    [
      "has no column 'clicked' (did you mean 'click'?), expected it for the "
      'schema'
    ],
    '--config.dataset.tasks.buy.where=clicked == 1',
  ),
  'side table repeats a key': _joined_case(
    CATEGORY_RANKS + b'toys,5\nbooks,6\n',
    [
      "{side}: row 6 column 'category' repeats 'books', expected one row "
      'per key'
    ],
  ),
  'side table lacks a key': _joined_case(
    CATEGORY_RANKS,
    [
      "{file}: row {toys_row} column 'category' is 'toys', which {side} "
      'does not list'
    ],
  ),
  'CRLF line endings and a byte order mark work': _works_like_plain(
    lambda _, d: b'\xef\xbb\xbf' + d.replace(b'\n', b'\r\n')
  ),
}


def _mkdir(path: pathlib.Path) -> pathlib.Path:
  path.mkdir()
  return path


# --- workdir and checkpoint faults on a copy of a finished run -------------


def _lock(ctx):
  """Holds the copy's lock as a live run would (fcntl.flock)."""
  fd = os.open(ctx['workdir'] / '.lock', os.O_RDWR | os.O_CREAT, 0o644)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(fd, b'{"pid": 1, "host": "corpus-test"}')
  return {'release': lambda: os.close(fd)}


def _flip_newest(ctx):
  """A byte flipped in the largest file of the newest checkpoint (16)."""
  state = ctx['workdir'] / 'checkpoints' / '16' / 'state'
  target = max(
    (p for p in state.rglob('*') if p.is_file()),
    key=lambda p: p.stat().st_size,
  )
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0xFF
  target.write_bytes(bytes(data))
  return {'files': _files(ctx['workdir'] / 'checkpoints')}


def _resumed_from_12(proc, ctx):
  import json

  results = json.loads((ctx['workdir'] / 'results.json').read_text())
  assert results['resumed_from_step'] == 12, results
  assert results['steps'] == 24, results
  warned = [x for x in proc.stderr.splitlines() if 'corrupt' in x]
  assert len(warned) == 1, proc.stderr
  assert 'step 16' in warned[0], warned
  assert str(ctx['workdir'] / 'checkpoints' / '16') in warned[0], warned
  # Nothing was deleted: the corrupt checkpoint is kept, for a look.
  assert ctx['files'] <= _files(ctx['workdir'] / 'checkpoints')


def _files(directory) -> set[str]:
  return {str(p) for p in pathlib.Path(directory).rglob('*')}


def _edit(path, edit):
  def setup(ctx):
    p = ctx['workdir'] / path
    p.write_bytes(edit(p.read_bytes()))
    return {}

  return setup


WORKDIR = {
  'workdir is a file': Case(
    _smoke(),
    ['{workdir} is a file'],
    workdir='fresh',
    setup=lambda ctx: {'workdir': _write(ctx['tmp'] / 'afile', b'x')},
  ),
  'workdir under a file': Case(
    _smoke(),
    ['lies under {tmp}/afile, which is a file'],
    workdir='fresh',
    setup=lambda ctx: {
      'workdir': _write(ctx['tmp'] / 'afile', b'x') / 'sub' / 'run'
    },
  ),
  'rerun with another config': Case(
    _smoke('--config.seed=3'),
    ['workdir {workdir} holds a run of another config: seed 0 -> 3'],
  ),
  'workdir locked by a live run': Case(
    _smoke(),
    ['workdir {workdir} is in use by pid 1 on host corpus-test'],
    setup=_lock,
  ),
  'fewer epochs than trained': Case(
    _smoke('--config.num_epochs=1'),
    ['{workdir} holds a run trained to step 16, past num_epochs=1'],
    alone=False,  # a warning about the schedule's length comes first
    rerecords=True,
  ),
  'damaged metrics.jsonl line': Case(
    _smoke('--config.num_epochs=3'),
    ['{workdir}/metrics.jsonl line 3 is not a metrics row'],
    setup=_edit(
      'metrics.jsonl',
      lambda d: b'\n'.join(
        b'{not json' if i == 2 else x for i, x in enumerate(_lines(d))
      ),
    ),
    alone=False,
    rerecords=True,
  ),
  'garbage fingerprint.json': Case(
    _smoke(),
    ['{workdir}/fingerprint.json cannot be read'],
    setup=_edit('fingerprint.json', lambda d: b'\x00garbage'),
  ),
  'checkpoint of another model shape': Case(
    _smoke(
      '--config.model.expert_hidden=(16,)',
      '--config.workdir_allow_changes=true',
    ),
    [
      'checkpoint {workdir}/checkpoints step 16 does not match the model: '
      'params/backbone/experts/mlp/Dense_0/bias has shape (2, 8), expected '
      '(2, 16)'
    ],
    alone=False,  # the allowed change is announced first
  ),
  'best-epoch checkpoint missing': Case(
    _smoke('--config.num_epochs=3'),
    [
      '{workdir}/checkpoints_best: the best-epoch checkpoint '
      '(epoch 2) is missing'
    ],
    setup=lambda ctx: shutil.rmtree(ctx['workdir'] / 'checkpoints_best'),
    alone=False,
    rerecords=True,
  ),
  'init_from a run without checkpoints': Case(
    _smoke('--config.init_from={tmp}'),
    ['init_from {tmp} holds no checkpoints/ directory'],
    workdir='fresh',
  ),
  'flipped bytes in the newest checkpoint': Case(
    _smoke('--config.num_epochs=3', '--config.checkpoint.max_to_keep=10'),
    [],
    code=0,
    setup=_flip_newest,
    check=_resumed_from_12,
  ),
}


def _earlier_run(damage=None):
  """A fresh workdir and, as init_from, a copy of the finished run
  ('earlier', `damage`d), whose files the case checks are kept."""

  def setup(ctx):
    earlier = ctx['tmp'] / 'earlier'
    shutil.copytree(ctx['finished'], earlier)
    if damage is not None:
      damage(earlier)
    return {
      'workdir': ctx['tmp'] / 'run',
      'earlier': earlier,
      'kept': _hashes(earlier),
    }

  return setup


def _earlier_kept(proc, ctx):
  assert _hashes(ctx['earlier']) == ctx['kept']


def _unreadable_states(run):
  for step in (run / 'checkpoints').iterdir():
    (step / 'state' / '_METADATA').unlink()


def _replace_by_dir(name):
  def setup(ctx):
    path = ctx['workdir'] / name
    path.unlink()
    path.mkdir()
    return {}

  return setup


def _checkpoints_as_a_file(ctx):
  shutil.rmtree(ctx['workdir'] / 'checkpoints')
  _write(ctx['workdir'] / 'checkpoints', b'not a directory')
  return {}


def _config_of_seed_5(ctx):
  """config.json of another seed and no fingerprint.json (a workdir of an
  mtl that recorded none): the config is checked from config.json."""
  path = ctx['workdir'] / 'config.json'
  path.write_text(path.read_text().replace('"seed": 0', '"seed": 5'))
  (ctx['workdir'] / 'fingerprint.json').unlink()
  return {}


def _both_records_garbage(ctx):
  (ctx['workdir'] / 'config.json').write_bytes(b'{garbage')
  (ctx['workdir'] / 'fingerprint.json').unlink()
  return {}


def _dangling_link(ctx):
  link = ctx['tmp'] / 'link'
  link.symlink_to(ctx['tmp'] / 'gone')
  return {'workdir': link}


def _preprocessing_format_7(ctx):
  path = ctx['workdir'] / 'preprocessing.json'
  path.write_text(path.read_text().replace('"format": 1', '"format": 7'))
  return {}


TRAIN = {
  'lock file is a directory': Case(
    _smoke(),
    [
      '{workdir}/.lock cannot be opened (Is a directory), expected the '
      "workdir's lock file there"
    ],
    setup=_replace_by_dir('.lock'),
  ),
  'results.json is a directory': Case(
    _smoke(),
    [
      '--workdir {workdir}: results.json is a directory, expected the file '
      'the run writes (move it away)'
    ],
    workdir='fresh',
    setup=lambda ctx: (
      (ctx['workdir'] / 'results.json').mkdir(parents=True) or {}
    ),
  ),
  'checkpoints is a file': Case(
    _smoke(),
    [
      '--workdir {workdir}: checkpoints is a file, expected the checkpoints '
      'directory the run writes (move it away)'
    ],
    setup=_checkpoints_as_a_file,
  ),
  'corrupt_steps.json unreadable': Case(
    _smoke(),
    [
      '{workdir}/checkpoints/corrupt_steps.json: unreadable (',
      'delete it to check every checkpoint afresh',
    ],
    setup=lambda ctx: (
      _write(ctx['workdir'] / 'checkpoints' / 'corrupt_steps.json', b'\xff\xfe')
      and {}
    ),
  ),
  'metrics.jsonl is a directory': Case(
    _smoke('--config.num_epochs=3'),
    [
      '{workdir}/metrics.jsonl is a directory, expected the metrics file '
      '(a JSON line per logged step)'
    ],
    setup=_replace_by_dir('metrics.jsonl'),
    alone=False,  # the schedule's warning comes first
    rerecords=True,
  ),
  'init_from a run of another model shape': Case(
    _smoke(
      '--config.init_from={earlier}', '--config.model.expert_hidden=(16,)'
    ),
    [
      'checkpoint {earlier}/checkpoints step 16 does not match the model: '
      'backbone/experts/mlp/Dense_0/bias has shape (2, 8), expected (2, 16)'
    ],
    workdir='fresh',
    setup=_earlier_run(),
    alone=False,  # orbax's read-only notes come first
    check=_earlier_kept,
  ),
  'init_from a run whose checkpoints are all unreadable': Case(
    _smoke('--config.init_from={earlier}'),
    ['init_from: no readable checkpoint in {earlier}/checkpoints'],
    workdir='fresh',
    setup=_earlier_run(_unreadable_states),
    alone=False,  # each skipped step is a warning first
    check=_earlier_kept,
  ),
  'fingerprint.json holds a list': Case(
    _smoke(),
    ['{workdir}/fingerprint.json holds list, expected {{}}'],
    setup=_edit('fingerprint.json', lambda d: b'[]'),
  ),
  'config.json of another config, no fingerprint.json': Case(
    _smoke(),
    [
      'workdir {workdir} holds a run of another config: dataset.seed 5 -> 0, '
      'seed 5 -> 0'
    ],
    setup=_config_of_seed_5,
  ),
  'config.json unreadable, no fingerprint.json': Case(
    _smoke(),
    [
      '{workdir}/config.json cannot be read (JSONDecodeError',
      'expected the JSON this workdir was recorded with',
    ],
    setup=_both_records_garbage,
  ),
  'workdir is a dangling symlink': Case(
    _smoke(),
    ['--workdir {workdir} cannot be created: File exists'],
    workdir='fresh',
    setup=_dangling_link,
  ),
}


def _tool(tool, *args, **kw):
  return Case(list(args), kw.pop('expect'), tool=tool, **kw)


def _eval(*args, expect, **kw):
  return _tool('mtl-eval', *args, expect=expect, **kw)


SMOKE_ROWS = b'x0,x1,x2,x3,x4,x5,x6,x7\n' + b'0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8\n'


def _rows(data: bytes = SMOKE_ROWS, name='rows.csv'):
  def setup(ctx):
    return {'rows': _write(ctx['tmp'] / name, data)}

  return setup


def _no_output(proc, ctx):
  """mtl-predict wrote no output, whole or partial."""
  assert not [
    p for p in ctx['tmp'].iterdir() if 'out.' in p.name and p.is_file()
  ]


def _predict(*args, expect, setup=None, output='{tmp}/out.csv', **kw):
  return _tool(
    'mtl-predict',
    '--input={rows}',
    f'--output={output}',
    *args,
    expect=expect,
    setup=setup or _rows(),
    check=_no_output,
    **kw,
  )


def _predict_rows(data: bytes, expect, name='rows.csv'):
  return _predict(expect=[f'{{rows}}: {expect}'], setup=_rows(data, name))


def _output_dir(ctx):
  _mkdir(ctx['tmp'] / 'out.csv')
  return {'rows': _write(ctx['tmp'] / 'rows.csv', SMOKE_ROWS)}


def _gzip_rows(ctx):
  import gzip

  z = gzip.compress(SMOKE_ROWS + SMOKE_ROWS.split(b'\n')[1] * 4000)
  return {'rows': _write(ctx['tmp'] / 'rows.csv.gz', z[: len(z) // 2])}


AFTER_TRAINING = {
  'mtl-eval: no such workdir': _eval(
    expect=[
      '{tmp}/nowhere is not a directory, expected the workdir of an '
      'mtl-train run'
    ],
    workdir='fresh',
    setup=lambda ctx: {'workdir': ctx['tmp'] / 'nowhere'},
  ),
  'mtl-eval: workdir is a file': _eval(
    expect=['{workdir} is not a directory, expected the workdir'],
    workdir='fresh',
    setup=lambda ctx: {'workdir': _write(ctx['tmp'] / 'afile', b'x')},
  ),
  'mtl-eval: config.json missing': _eval(
    expect=['{workdir} has no config.json, expected the workdir of an'],
    setup=lambda ctx: (ctx['workdir'] / 'config.json').unlink(),
  ),
  'mtl-eval: config.json not JSON': _eval(
    expect=['{workdir}/config.json is not JSON (Expecting property name'],
    setup=_edit('config.json', lambda d: b'{oops'),
  ),
  'mtl-eval: preprocessing.json not JSON': _eval(
    expect=['{workdir}/preprocessing.json: is not JSON (Expecting'],
    setup=_edit('preprocessing.json', lambda d: b'{oops'),
  ),
  'mtl-eval: preprocessing.json of another format': _eval(
    expect=['{workdir}/preprocessing.json: format 7, expected 1'],
    setup=_preprocessing_format_7,
  ),
  'mtl-eval: no checkpoint of that step': _eval(
    '--checkpoint=99',
    expect=[
      '{workdir} has no checkpoint of step 99, expected one of [8, 12, 16] '
      '(checkpoints/) or [16] (checkpoints_best/)'
    ],
  ),
  'mtl-eval: unknown --checkpoint': _eval(
    '--checkpoint=bestest',
    expect=["--checkpoint is 'bestest', expected best, latest or a step"],
  ),
  'mtl-eval: latest of a run without checkpoints/': _eval(
    '--checkpoint=latest',
    expect=[
      '{workdir}/checkpoints holds no checkpoint, expected the latest '
      'checkpoint of a trained run'
    ],
    setup=lambda ctx: shutil.rmtree(ctx['workdir'] / 'checkpoints'),
  ),
  'mtl-predict: --input missing': _predict(
    expect=['--input {tmp}/nowhere.csv is not a file'],
    setup=lambda ctx: {'rows': ctx['tmp'] / 'nowhere.csv'},
  ),
  'mtl-predict: --input a directory': _predict(
    expect=['--input {tmp}/rows is not a file'],
    setup=lambda ctx: {'rows': _mkdir(ctx['tmp'] / 'rows')},
  ),
  'mtl-predict: --output of an unknown format': _predict(
    expect=["--output is '{tmp}/out.txt', expected a .parquet or .csv file"],
    output='{tmp}/out.txt',
  ),
  "mtl-predict: --output's folder missing": _predict(
    expect=[
      '--output {tmp}/nowhere/out.csv: its folder {tmp}/nowhere is not a '
      'writable directory'
    ],
    output='{tmp}/nowhere/out.csv',
  ),
  'mtl-predict: --output an existing directory': _predict(
    expect=[
      '--output {tmp}/out.csv is a directory, expected a file (checked '
      'before any prediction)'
    ],
    setup=_output_dir,
  ),
  'mtl-predict: --batch_size=0': _predict(
    '--batch_size=0', expect=['--batch_size is 0, expected >= 1']
  ),
  'mtl-predict: text in a dense column': _predict_rows(
    SMOKE_ROWS + b'1,2,abc,4,5,6,7,8\n',
    "row 2 column 'x2' is 'abc', expected a finite number",
  ),
  'mtl-predict: empty input': _predict_rows(b'', 'is empty, expected a header'),
  'mtl-predict: header and no rows': _predict_rows(
    SMOKE_ROWS.split(b'\n')[0] + b'\n', 'has no data rows, expected some'
  ),
  'mtl-predict: input not Parquet': _predict_rows(
    SMOKE_ROWS,
    'is not a Parquet file (Parquet magic bytes not found',
    name='rows.parquet',
  ),
  'mtl-predict: duplicated header name': _predict_rows(
    b'x0,x1,x2,x3,x4,x5,x6,x7,x2\n1,2,3,4,5,6,7,8,9\n',
    "the header names column 'x2' twice (columns 3 and 9), expected "
    'distinct names',
  ),
  'mtl-predict: truncated gzip input': _predict(
    expect=[
      '{rows}: cannot be decompressed (Compressed file ended before the '
      'end-of-stream marker was reached), expected a whole gzip file'
    ],
    setup=_gzip_rows,
  ),
  'mtl-export: --out is a file': _tool(
    'mtl-export',
    '--out={tmp}/afile',
    expect=['--out {tmp}/afile is a file, expected a directory'],
    setup=lambda ctx: {'afile': _write(ctx['tmp'] / 'afile', b'mine')},
    check=lambda proc, ctx: _kept_mine(ctx['tmp'] / 'afile'),
  ),
  'mtl-export: unknown platform': _tool(
    'mtl-export',
    '--out={tmp}/export',
    '--platforms=gpu',
    expect=['--platforms is gpu, expected cpu and any of cpu, cuda, tpu'],
    check=lambda proc, ctx: _nothing_at(ctx['tmp'] / 'export'),
  ),
}


def _kept_mine(path):
  assert path.read_bytes() == b'mine'


def _nothing_at(path):
  assert not path.exists()


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
  path.write_bytes(data)
  return path


CASES = {
  **{f'config: {k}': c for k, c in CONFIG.items()},
  **{f'data: {k}': c for k, c in DATA.items()},
  **{f'data: {k}': c for k, c in TABLE.items()},
  **{f'workdir: {k}': c for k, c in WORKDIR.items()},
  **{f'workdir: {k}': c for k, c in TRAIN.items()},
  **{f'workdir: {k}': c for k, c in AFTER_TRAINING.items()},
}


# --- running them ----------------------------------------------------------


def _env(tmp: pathlib.Path) -> dict:
  env = cli.one_device_env()  # One device, as a plain user run.
  env['JAX_PLATFORMS'] = 'cpu'
  env['WANDB_MODE'] = 'disabled'
  env['TFDS_DATA_DIR'] = str(tmp / 'tfds-default')
  return env


# Each command's module for tests/cli.py, and the source that runs it there
# (mtl-predict and mtl-export through a patch: cli.py's forkserver runs the
# entry points it knows; the patch calls theirs, then exits 0 if it
# returns, as their console scripts do).
EARLIER = {  # Fresh cases that copy the finished run themselves.
  f'workdir: {k}' for k, c in TRAIN.items() if '{earlier}' in str(c.args)
}
TOOLS = {
  'mtl-train': ('mtl.shell.main', ''),
  'mtl-eval': ('mtl.shell.evaluate', ''),
  'mtl-predict': (
    'mtl.shell.main',
    'from mtl.shell import predict\npredict.run()\nraise SystemExit(0)\n',
  ),
  'mtl-export': (
    'mtl.shell.main',
    'from mtl.shell import export\nexport.run()\nraise SystemExit(0)\n',
  ),
}


def _main(args, tmp, timeout=300, tool='mtl-train'):
  module, patch = TOOLS[tool]
  return cli.run(
    args, env=_env(tmp), timeout=timeout, module=module, patch=patch
  )


def _hashes(workdir: pathlib.Path) -> dict[str, str]:
  """sha256 of every file a run wrote (the lock file aside)."""
  if not workdir.is_dir():
    return {}
  return {
    str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(workdir.rglob('*'))
    if p.is_file() and p.name != '.lock'
  }


def _run_case(name: str, case: Case, base: dict) -> dict:
  tmp = base['root'] / f'case{sorted(CASES).index(name)}'
  tmp.mkdir()
  ctx = {'tmp': tmp, 'sample': base['sample'], 'cache': base['cache']}
  ctx['finished'] = base['finished']
  ctx['workdir'] = tmp / 'run'
  if case.workdir == 'copy':
    shutil.copytree(base['finished'], ctx['workdir'])
  ctx.update((case.setup and case.setup(ctx)) or {})
  before = _hashes(ctx['workdir'])
  args = [f'--workdir={ctx["workdir"]}'] + [a.format(**ctx) for a in case.args]
  start = time.monotonic()
  try:
    proc = _main(args, tmp, tool=case.tool)
  finally:
    if 'release' in ctx:
      ctx['release']()
  seconds = time.monotonic() - start
  return {'proc': proc, 'ctx': ctx, 'before': before, 'seconds': seconds}


def run(kind: str, tmp_path_factory, data_dir) -> dict:
  """Every `kind` case's outcome ('config', 'data' or 'workdir'); the cases
  run two at a time. What the cases copy is made first: a finished smoke run
  (if a case copies it) and, for the data cases, a prepared cache of the
  Ali-CCP sample."""
  names = [n for n in CASES if n.split(':')[0] == kind]
  start = time.monotonic()
  root = tmp_path_factory.mktemp(f'corpus-{kind}')
  finished = root / 'finished'
  if any(CASES[n].workdir == 'copy' or n in EARLIER for n in names):
    proc = _main(SMOKE + [f'--workdir={finished}'], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
  sample = data_dir / 'ali-ccp-sample'
  base = {'root': root, 'finished': finished, 'sample': sample, 'cache': None}
  if kind == 'data':
    # One prepared cache of the checksummed sample, copied per case.
    prep = {'tmp': root / 'prep', 'sample': sample}
    prep['tmp'].mkdir()
    made = _raw_files(prep, variant='sample')
    _load_ali_ccp(
      variant='sample', manual_dir=str(made['raw']), data_dir=str(made['tfds'])
    )
    base['cache'] = made['tfds']
  with futures.ThreadPoolExecutor(2) as pool:
    jobs = {n: pool.submit(_run_case, n, CASES[n], base) for n in names}
    outcomes = {n: j.result() for n, j in jobs.items()}
  seconds = time.monotonic() - start
  slowest = sorted(outcomes, key=lambda n: -outcomes[n]['seconds'])[:5]
  print(
    f'bad-input corpus, {kind}: {len(names)} cases in {seconds:.0f} s; '
    'slowest: '
    + ', '.join(f'{n} {outcomes[n]["seconds"]:.0f} s' for n in slowest)
  )
  return outcomes


def check(outcomes: dict, name: str) -> None:
  """Asserts what case `name` promises of its outcome."""
  case = CASES[name]
  got = outcomes[name]
  proc, ctx = got['proc'], got['ctx']
  stderr = proc.stderr
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert proc.returncode == case.code, (
    f'exit code {proc.returncode}, expected {case.code}: {stderr[-3000:]}'
  )
  if case.code in (2, 3):  # bad input; a run that went non-finite/diverged
    lines = stderr.strip().splitlines()
    errors = [x for x in lines if x.startswith(f'{case.tool}: error:')]
    assert len(errors) == 1 and errors[0] == lines[-1], stderr[-3000:]
    if case.alone:
      assert len(lines) == 1, stderr[-3000:]
    for expected in case.expect:
      assert expected.format(**ctx) in errors[0], errors[0]
  if case.code == 2:
    # Nothing already written was lost or changed; a new workdir got no
    # results.
    after = _hashes(ctx['workdir'])
    if case.rerecords:
      for name in ('config.json', 'fingerprint.json'):
        after.pop(name), got['before'].pop(name)
    if got['before']:
      assert 'results.json' in got['before']
      assert after == got['before']
    else:
      assert not {'results.json', 'config.json'} & set(after), after
  if case.check is not None:
    case.check(proc, ctx)
