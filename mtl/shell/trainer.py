"""The trainer: config -> dataset, model, step -> workdir (shell code).

`train(config, workdir)` is the one entry point for a single run and for a
population of K members (a single run is a population of one).
"""

import pathlib

import ml_collections

from mtl.shell import loop, members, population_loop


def train(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains every member of the config; returns what results.json holds."""
  if members.is_population(config):
    return population_loop.train_population(config, pathlib.Path(workdir))
  return loop.train_and_evaluate(config, pathlib.Path(workdir))
