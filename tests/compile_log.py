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
