"""Serving a run exported by `mtl-export`, without mtl's trainer.

  from mtl import serving
  model = serving.load('exported/census_mmoe')
  model.predict(dense, sparse)      # encoded: [b, F] f32, [b, S] i32
  model.predict_rows(frame)         # raw rows: a pandas DataFrame
  # -> {task: [b] probabilities (binary) or values (regression)}

Only jax (jax.export) and numpy are imported; raw rows are encoded by
mtl.data.preprocessing (the builders' own encoders, with the vocabularies
and normalisers saved beside the model), imported when first needed. Never
mtl.shell: tests/shell/test_after_training.py runs this in a fresh process and
checks that no mtl.shell module was loaded. Any batch size runs: the batch
dimension was exported symbolic.
"""

import json
import pathlib

import numpy as np
from jax import export as jax_export


class Model:
  """An exported run (one member of a population)."""

  def __init__(self, directory, member: str | None = None):
    d = pathlib.Path(directory)
    self.signature = json.loads((d / 'signature.json').read_text())
    members = self.signature['members']
    if members is not None:
      if member is None:
        member = members[0]
      if member not in members:
        raise ValueError(
          f'{d}: member {member!r} is not one of {", ".join(members)}'
        )
      params = d / 'members' / member / 'params.npz'
    elif member is not None:
      raise ValueError(f'{d} holds a single run, not member {member!r}')
    else:
      params = d / 'params.npz'
    self.member = member
    self.directory = d
    self._exported = jax_export.deserialize(
      bytearray((d / 'model.jaxexport').read_bytes())
    )
    with np.load(params) as z:
      self._params = [z[k] for k in sorted(z.files)]
    self.tasks = [o['task'] for o in self.signature['outputs']]
    self.dense_names = self.signature['inputs']['dense']
    self.sparse_names = self.signature['inputs']['sparse']
    self._encoder = None
    # Each sparse column's number of ids (0 padding, 1 out of vocabulary).
    prep = d / 'preprocessing.json'
    sizes = (
      json.loads(prep.read_text()).get('vocab_sizes')
      if prep.is_file()
      else None
    )
    self._sizes = (
      None
      if sizes is None
      else np.asarray([v['size'] if isinstance(v, dict) else v for v in sizes])
    )

  def predict(self, dense, sparse) -> dict[str, np.ndarray]:
    """Outputs {task: [b]} of encoded features."""
    dense, sparse = np.asarray(dense, np.float32), np.asarray(sparse, np.int32)
    want = (len(self.dense_names), len(self.sparse_names))
    if (
      dense.ndim != 2
      or sparse.ndim != 2
      or (dense.shape[1], sparse.shape[1]) != want
      or dense.shape[0] != sparse.shape[0]
    ):
      raise ValueError(
        f'dense {list(dense.shape)} and sparse {list(sparse.shape)}, expected '
        f'[b, {want[0]}] and [b, {want[1]}]'
      )
    if dense.shape[0] == 0:
      return {t: np.zeros((0,), np.float32) for t in self.tasks}
    self._check_ids(sparse)
    y = np.asarray(self._exported.call(self._params, dense, sparse))
    return dict(zip(self.tasks, y, strict=True))

  def _check_ids(self, sparse: np.ndarray) -> None:
    """A ValueError naming the first id outside its column's table (an id
    past a table would gather NaN for every task)."""
    if self._sizes is None or len(self._sizes) != sparse.shape[1]:
      return
    bad = (sparse < 0) | (sparse >= self._sizes)
    if bad.any():
      row, col = (int(i[0]) for i in np.nonzero(bad))
      raise ValueError(
        f'sparse column {self.sparse_names[col]!r} holds id '
        f'{int(sparse[row, col])} at row {row}, expected 0..'
        f'{int(self._sizes[col]) - 1} (0 padding, 1 out of vocabulary: '
        'encode raw values with encode() or predict_rows())'
      )

  @property
  def encoder(self):
    if self._encoder is None:
      from mtl.data import preprocessing

      artefact = json.loads((self.directory / 'preprocessing.json').read_text())
      self._encoder = preprocessing.Encoder(artefact)
    return self._encoder

  def encode(self, frame) -> dict[str, np.ndarray]:
    """{'dense', 'sparse'} of raw rows (a DataFrame), as training encoded
    them; unseen categories get the OOV id."""
    return encode_frame(self.encoder, frame)

  def predict_rows(self, frame) -> dict[str, np.ndarray]:
    x = self.encode(frame)
    return self.predict(x['dense'], x['sparse'])


def encode_frame(encoder, frame) -> dict[str, np.ndarray]:
  """A DataFrame of raw rows encoded by a preprocessing.Encoder: values as
  the file readers give them (text; missing as None; lists stay lists)."""
  frame = frame.reset_index(drop=True)
  encoder.check_columns(frame.columns, 'rows', labels=False)
  text = frame.astype(object).where(frame.notna(), None)
  for c in text.columns:
    text[c] = [
      v if v is None or isinstance(v, list | tuple) else str(v) for v in text[c]
    ]
  return encoder.features(text, 0, 'rows')


def load(directory, member: str | None = None) -> Model:
  """The exported run in `directory` (a population: `member`, default the
  first)."""
  return Model(directory, member)
