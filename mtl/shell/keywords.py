"""Config entries from the signatures of registered components (shell code).

A component's keyword arguments and their defaults are declared once, in its
own signature: an architecture's dataclass fields, a balancing method's or a
dataset loader's keyword parameters. `configs/common.py` builds the config's
`model`, `weighting.<method>`, `dataset` and `population.weighting` entries
from them, so a new component needs no table of defaults anywhere else, and
`resolve_model` hands the chosen architecture exactly its own keywords.
"""

import collections.abc
import dataclasses
import inspect
import types
import typing

from absl import logging
from ml_collections.config_dict import placeholder

from mtl.errors import ConfigError, did_you_mean

_SKIP = ('num_tasks', 'parent', 'name')


def _plain_type(annotation) -> type:
  """The config field type of an annotation: int, float, str, bool, tuple."""
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _plain_type(args[0])
  if origin is not None:
    annotation = origin
  if annotation in (int, float, str, bool):
    return annotation
  if isinstance(annotation, type) and issubclass(
    annotation, (tuple, list, collections.abc.Sequence)
  ):
    return tuple
  return str  # Paths and the like.


def keywords(component) -> dict[str, tuple[typing.Any, type]]:
  """{name: (default or dataclasses.MISSING, type)} of a component's keywords.

  A Linen module's are its init fields but num_tasks (the model sets it); a
  function's are its keyword parameters.
  """
  if dataclasses.is_dataclass(component):
    hints = typing.get_type_hints(component)
    return {
      f.name: (f.default, _plain_type(hints.get(f.name, str)))
      for f in dataclasses.fields(component)
      if f.init and f.name not in _SKIP
    }
  hints = typing.get_type_hints(component)
  return {
    p.name: (
      dataclasses.MISSING if p.default is p.empty else p.default,
      _plain_type(hints.get(p.name, str)),
    )
    for p in inspect.signature(component).parameters.values()
    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
  }


def _entry(default, kind):
  if default is None or default is dataclasses.MISSING:
    return placeholder(kind)
  return tuple(default) if isinstance(default, list) else default


def defaults(component) -> dict:
  """A component's keywords as config entries (None defaults typed)."""
  return {k: _entry(d, t) for k, (d, t) in keywords(component).items()}


def union_of(registry, *, per_member: bool = False) -> dict:
  """Every keyword of every registered component, each unset (None).

  `per_member`: the entries of `population.weighting`, one tuple of values
  per member (empty: not varied).
  """
  out = {}
  for component in registry.values():
    for name, (_, kind) in keywords(component).items():
      if name not in out:
        out[name] = () if per_member else placeholder(kind)
  return out


def resolve_model(config, architectures) -> dict:
  """The keyword arguments of `config.model_name`, defaults filled in.

  `config.model` holds the keywords of every registered architecture; those
  of other architectures that are set are ignored with a warning (switching
  `model_name` on the command line keeps working), and the chosen one's
  unset keywords take the defaults of its signature. The result is written
  back into `config.model`, so config.json records the values trained with.
  """
  name = config.model_name
  own = keywords(architectures[name])
  kwargs = {}
  for key, value in config.model.items():
    if key in own:
      if value is None:
        value = own[key][0]
        if value is dataclasses.MISSING:
          raise ConfigError(
            f'model.{key} is not set, expected a value: {name!r} has no '
            'default for it'
          )
      kwargs[key] = tuple(value) if isinstance(value, list) else value
    elif not any(key in keywords(a) for a in architectures.values()):
      hint = did_you_mean(key, own, prefix='model.')
      raise ConfigError(
        f'model.{key} is not a keyword of any architecture{hint}; {name!r} '
        f'takes {", ".join(own)}'
      )
    elif value is not None:
      logging.warning(
        'model.%s=%s is not a keyword of %r; ignored', key, value, name
      )
  with config.unlocked():
    for key, value in kwargs.items():
      config.model[key] = value
  return kwargs
