"""`mtl-predict --workdir=W --input=rows.csv|.parquet --output=preds.parquet`:
per-row, per-task outputs of a trained run.

The input (CSV, TSV, optionally gzipped, or Parquet, with a header line;
census also reads the raw headerless UCI format) is read and predicted in
chunks of --batch_size rows, so it may be larger than memory; each chunk is
encoded by the run's preprocessing.json (mtl.data.preprocessing: the
builders' own encoders; an unseen category gets the OOV id) and written to
the output Parquet (or CSV) file as it goes. Columns: one per task, a
probability (binary) or a value in the label's units (regression; a table's
scale and log1p undone); a population has one per task and member,
`<task>/<member>`; a run of select_best 'per_task' outputs each task from
its own best epoch's params. --keep=COL copies input columns (ids) to the
output first.

The input's columns must be the run's inputs, optionally its label columns
and the --keep columns: a missing or an unknown column is one line
(`mtl-predict: error: ...`, exit 2). The output is written to a temporary
file and renamed when complete.
"""

import os
import pathlib

import jax
import numpy as np

from mtl.data import preprocessing
from mtl.errors import ConfigError, DataError
from mtl.shell import cli, restore

OUTPUT_FORMATS = ('.parquet', '.csv')


def output_names(run: restore.Run) -> list[str]:
  names = [t.name for t in run.tasks]
  if not run.is_population:
    return names
  return [f'{t}/{m["name"]}' for m in run.members for t in names]


def make_predict(run: restore.Run, params, batch_size: int, per_task=False):
  """`predict(dense, sparse) -> [n, outputs]` f32 on numpy rows, in padded
  batches of `batch_size` (one compiled shape); per_task: params stacked
  [T, ...], task t from params t (select_best 'per_task')."""
  fn = restore.make_outputs(run, per_task=per_task)
  if run.is_population:
    fn = jax.vmap(fn, in_axes=(0, None, None))
  fn = jax.jit(fn)

  def predict(dense, sparse):
    n = dense.shape[0]
    out = []
    for i in range(0, n, batch_size):
      d, s = dense[i : i + batch_size], sparse[i : i + batch_size]
      pad = batch_size - d.shape[0]
      d = np.pad(d, ((0, pad), (0, 0)))
      s = np.pad(s, ((0, pad), (0, 0)))
      y = np.asarray(fn(params, d, s))  # [T, B] or [K, T, B]
      y = y.reshape(-1, batch_size)[:, : batch_size - pad]
      out.append(y.T)
    return np.concatenate(out)

  return predict


class _Writer:
  """Parquet (pyarrow, one row group per chunk) or CSV, appended."""

  def __init__(self, path: pathlib.Path):
    self.path, self.tmp = path, path.with_name(f'.{path.name}.tmp')
    self.parquet = path.suffix == '.parquet'
    self._writer = None

  def write(self, frame) -> None:
    if self.parquet:
      import pyarrow as pa
      import pyarrow.parquet as pq

      table = pa.Table.from_pandas(frame, preserve_index=False)
      if self._writer is None:
        self._writer = pq.ParquetWriter(self.tmp, table.schema)
      self._writer.write_table(table)
    else:
      frame.to_csv(
        self.tmp,
        mode='a' if self._writer else 'w',
        header=not self._writer,
        index=False,
      )
      self._writer = True

  def close(self) -> None:
    if self.parquet and self._writer is not None:
      self._writer.close()
    os.replace(self.tmp, self.path)


def predict(
  workdir,
  input_path,
  output_path,
  *,
  checkpoint: str = 'default',
  batch_size: int = 8192,
  keep=(),
) -> int:
  """Writes the outputs of every input row; returns the number of rows."""
  import pandas as pd

  input_path, output_path = pathlib.Path(input_path), pathlib.Path(output_path)
  if batch_size < 1:
    raise ConfigError(f'--batch_size is {batch_size}, expected >= 1')
  if output_path.suffix not in OUTPUT_FORMATS:
    raise ConfigError(
      f'--output is {str(output_path)!r}, expected a '
      f'{" or ".join(OUTPUT_FORMATS)} file'
    )
  if not input_path.is_file():
    raise DataError(f'--input {input_path} is not a file')
  if output_path.is_dir():
    raise ConfigError(
      f'--output {output_path} is a directory, expected a file (checked '
      'before any prediction)'
    )
  if output_path.resolve() == input_path.resolve():
    raise ConfigError(
      f'--output {output_path} is the --input file, expected another file '
      '(the predictions would replace the rows)'
    )
  folder = output_path.resolve().parent
  if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
    raise ConfigError(
      f'--output {output_path}: its folder {folder} is not a writable '
      'directory, expected one (checked before any prediction)'
    )
  run = restore.open_run(workdir)
  enc = preprocessing.Encoder(run.artefact)
  source = enc.source(input_path)
  columns = source.columns()
  enc.check_columns(columns, input_path, labels=False, keep=keep)
  params, where = restore.restore_params(run, checkpoint)
  names = output_names(run)
  fn = make_predict(run, params, batch_size, where.get('per_task', False))
  writer, rows = _Writer(output_path), 0
  try:
    for start, chunk in source.chunks(batch_size, columns):
      if chunk.empty:  # A header and no rows: said below.
        continue
      x = enc.features(chunk, start, input_path)
      y = fn(x['dense'], x['sparse'])
      frame = pd.DataFrame({k: chunk[k].to_numpy() for k in keep})
      for i, name in enumerate(names):
        frame[name] = y[:, i]
      writer.write(frame)
      rows += len(chunk)
  except BaseException:
    writer.tmp.unlink(missing_ok=True)
    raise
  if not rows:
    writer.tmp.unlink(missing_ok=True)
    raise DataError(f'{input_path}: has no data rows, expected some')
  writer.close()
  return rows


def _add_flags(p) -> None:
  p.add_argument('--workdir', required=True, help='A trained run directory.')
  p.add_argument('--input', required=True, help='CSV, TSV or Parquet rows.')
  p.add_argument('--output', required=True, help='A .parquet or .csv file.')
  p.add_argument('--checkpoint', default='default', help='best, latest, step')
  p.add_argument('--batch_size', type=int, default=8192, help='Rows a step.')
  p.add_argument(
    '--keep',
    action='append',
    default=[],
    help='An input column copied to the output (repeat for several).',
  )


def _main(args) -> None:
  n = predict(
    args.workdir,
    args.input,
    args.output,
    checkpoint=args.checkpoint,
    batch_size=args.batch_size,
    keep=tuple(args.keep),
  )
  print(f'{n} rows -> {args.output}', flush=True)


def run(argv=None) -> None:
  cli.run('mtl-predict', __doc__, _add_flags, _main, argv)


if __name__ == '__main__':
  run()
