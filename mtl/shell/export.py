"""`mtl-export --workdir=W --out=DIR`: a trained run's inference function,
serialised with `jax.export`, for serving without mtl's trainer.

DIR holds:
  model.jaxexport     `outputs(params, dense [b, F] f32, sparse [b, S] i32)
                      -> [T, b] f32`: the eval step's forward pass, then per
                      task a probability or a regression value in the
                      label's units (mtl.shell.restore.make_outputs). `b` is
                      a symbolic dimension: any batch size. `params` is the
                      flat list of parameter arrays, in params.npz's order.
                      Lowered for cpu and, where lowering works, cuda and
                      tpu (--platforms); no accelerator is needed to lower.
  params.npz          the checkpoint's parameters ('000', '001', ...); a
                      population has members/<name>/params.npz per member;
                      select_best 'per_task': each task's params stacked
                      [T, ...], task t's output from params t
  preprocessing.json  the run's encoding of raw rows (mtl.data
                      .preprocessing), for serving from raw rows
  signature.json      inputs, outputs (tasks, kinds), platforms, members,
                      the checkpoint and the jax version that wrote it

mtl/serving.py loads and runs it. ONNX is not written: jax2onnx is young and
covers a subset of JAX's primitives, and jax2tf + tf2onnx needs TensorFlow
(not a dependency) and a deprecated path; StableHLO through jax.export is
JAX's own supported serialisation.
"""

import json
import os
import pathlib
import shutil

import jax
import numpy as np
from absl import logging
from jax import export as jax_export

from mtl.core import population, precision
from mtl.errors import ConfigError
from mtl.shell import cli, restore
from mtl.shell.json_files import write_json

PLATFORMS = ('cpu', 'cuda', 'tpu')
FORMAT = 1


def _member_params(run, params):
  if not run.is_population:
    return [params]
  return [population.member(params, j) for j in range(len(run.members))]


def _lower(infer, specs, platforms):
  """The Exported for as many of `platforms` as lower (cpu must)."""
  try:
    return jax_export.export(jax.jit(infer), platforms=platforms)(*specs)
  except Exception as e:  # noqa: BLE001 -- try each platform alone.
    if len(platforms) == 1:
      raise ConfigError(
        f'the model does not lower for {platforms[0]}: {str(e).splitlines()[0]}'
      ) from e
  ok = []
  for p in platforms:
    try:
      jax_export.export(jax.jit(infer), platforms=(p,))(*specs)
      ok.append(p)
    except Exception as e:  # noqa: BLE001
      logging.warning('not exported for %s: %s', p, str(e).splitlines()[0])
  if 'cpu' not in ok:
    raise ConfigError('the model does not lower for cpu')
  return jax_export.export(jax.jit(infer), platforms=tuple(ok))(*specs)


def export(
  workdir, out, *, checkpoint: str = 'default', platforms=PLATFORMS
) -> dict:
  """Writes DIR (module docstring); returns its signature."""
  out = pathlib.Path(out)
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or 'cpu' not in platforms:
    raise ConfigError(
      f'--platforms is {",".join(platforms)}, expected cpu and any of '
      f'{", ".join(PLATFORMS)}'
    )
  if out.exists() and not out.is_dir():
    raise ConfigError(f'--out {out} is a file, expected a directory')
  if out.resolve() == pathlib.Path(workdir).resolve():
    raise ConfigError(
      f'--out {out} is the workdir, expected another directory (the export '
      "would overwrite the run's config.json)"
    )
  if (
    out.is_dir()
    and any(out.iterdir())
    and not (out / 'signature.json').is_file()
  ):
    raise ConfigError(
      f'--out {out} is a non-empty directory that holds no earlier export '
      '(no signature.json), expected a new or empty directory or an earlier '
      'export to replace'
    )
  parent = out.resolve().parent if not out.exists() else out.resolve()
  while not parent.exists():
    parent = parent.parent
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f'--out {out}: {parent} is not writable, expected it')
  run = restore.open_run(workdir)
  params, where = restore.restore_params(run, checkpoint)
  # bfloat16 tables (embedding.dtype) as float32, exact: npz has no bfloat16.
  members = precision.float32_view(_member_params(run, params))
  leaves, treedef = jax.tree.flatten(members[0])
  outputs = restore.make_outputs(run, per_task=where.get('per_task', False))

  def infer(flat, dense, sparse):
    return outputs(jax.tree.unflatten(treedef, list(flat)), dense, sparse)

  (b,) = jax_export.symbolic_shape('b')
  specs = (
    [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
    jax.ShapeDtypeStruct((b, len(run.artefact['dense_names'])), np.float32),
    jax.ShapeDtypeStruct((b, len(run.artefact['sparse_names'])), np.int32),
  )
  exported = _lower(infer, specs, tuple(platforms))
  out.mkdir(parents=True, exist_ok=True)
  (out / 'model.jaxexport').write_bytes(exported.serialize())
  names = [m['name'] for m in run.members] if run.is_population else None
  for j, p in enumerate(members):
    d = out if names is None else out / 'members' / names[j]
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
      f'{i:03d}': np.asarray(x) for i, x in enumerate(jax.tree.leaves(p))
    }
    np.savez(d / 'params.npz', **arrays)
  shutil.copyfile(run.workdir / 'config.json', out / 'config.json')
  (out / 'preprocessing.json').write_text(
    json.dumps(run.artefact, indent=2, sort_keys=True) + '\n'
  )
  signature = {
    'format': FORMAT,
    'inputs': {
      'dense': run.artefact['dense_names'],
      'sparse': run.artefact['sparse_names'],
    },
    'outputs': [
      {'task': t.name, 'kind': t.kind, 'train': t.train} for t in run.tasks
    ],
    'platforms': list(exported.platforms),
    'members': names,
    'num_params': len(leaves),
    'workdir': str(run.workdir),
    **where,
    'jax_version': jax.__version__,
  }
  write_json(out / 'signature.json', signature)
  return signature


def _add_flags(p) -> None:
  p.add_argument('--workdir', required=True, help='A trained run directory.')
  p.add_argument('--out', required=True, help='The directory to write.')
  p.add_argument('--checkpoint', default='default', help='best, latest, step')
  p.add_argument(
    '--platforms',
    default=','.join(PLATFORMS),
    help='Comma-separated: cpu and any of cuda, tpu (lowered without them).',
  )


def _main(args) -> None:
  platforms = tuple(p for p in args.platforms.split(',') if p)
  sig = export(
    args.workdir, args.out, checkpoint=args.checkpoint, platforms=platforms
  )
  print(
    f'exported step {sig["step"]} for {",".join(sig["platforms"])} -> '
    f'{args.out}',
    flush=True,
  )


def run(argv=None) -> None:
  cli.run('mtl-export', __doc__, _add_flags, _main, argv)


if __name__ == '__main__':
  run()
