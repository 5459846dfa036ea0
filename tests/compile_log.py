"""Which programs a training run compiles in which epoch: jax's own compile
log (`jax.log_compiles`), split at the trainer's 'epoch i/N' console lines.
Shared by the no-recompile tests of each input mode."""

import logging
import re
import sys

import jax


def compiles_per_epoch(config, workdir, capsys):
  """Trains `config` into `workdir` under jax.log_compiles.

  Returns (a list per epoch of the names compiled before its 'epoch i/N'
  line, the run's stderr). `capsys` is the test's pytest fixture.
  """
  from mtl.shell import trainer

  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter('COMPILE %(message)s'))
  handler.addFilter(lambda r: r.getMessage().startswith('Compiling '))
  logger = logging.getLogger('jax')
  logger.addHandler(handler)
  try:
    with jax.log_compiles():
      trainer.train(config, workdir)
  finally:
    logger.removeHandler(handler)
  epochs = [[]]
  err = capsys.readouterr().err
  for line in err.splitlines():
    if line.startswith('COMPILE '):
      epochs[-1].append(re.match(r'COMPILE Compiling (\S+)', line)[1])
    elif re.match(r'epoch \d+/\d+ ', line):
      epochs.append([])
  return epochs, err


def assert_compiled_in_the_first_epoch_only(epochs) -> None:
  """Epoch 1 compiled something (the log was seen); epoch 2 at most the
  copy of the best epoch's params (made after epoch 1's evaluation); epoch
  3 nothing."""
  first, second, third = epochs[:3]
  assert first, 'epoch 1 compiled nothing: the compile log was not seen'
  assert set(second) <= {'jit(copy)'}, second
  assert third == [], third
