"""Runs a config into a workdir, reusing a finished run of the same config.

`run(config, workdir)` trains through `mtl.shell.trainer.train` (a single
run or a population: it returns what the run's results.json holds, a flat
dict or one with a 'members' list) unless the workdir already holds a
finished run of the same config. What it finds in the workdir:

  nothing (or an empty directory)       trains
  results.json, the same config         reuses results.json
  the same config, no results.json      trains: the trainer resumes from
                                        the run's checkpoints
  anything else (another config, no     moves the workdir aside to
  config.json; or --force)              <workdir>.stale-<time>, says so in
                                        one line, trains afresh

"The same config" compares the canonical JSON (tuples as lists) of the
stored config.json (the trainer writes the resolved `config.to_dict()`: the
model's unset keywords filled in, see `resolved`) with the requested
config's, resolved the same way, except IGNORED: keys that change how a run
is watched or where its files are, not what it computes, and the parameters
of the weighting methods other than the chosen one (unused). A key only one
side has (another mtl version) counts as a difference unless it is unset
(None or empty) there. Both sides are flattened and their legacy values
read as the workdir's fingerprint does (mtl/shell/config_fingerprint.py:
`flatten`, `as_current`). IGNORED stays within the trainer's own exclusions
(EXCLUDED_KEYS there), so a workdir this runner resumes is never one the
trainer refuses as another config's; it is narrower (num_epochs, for one,
counts: a shorter finished run is not this config's results). The check
runs before `train` is called. Nothing is deleted: a stale workdir keeps
every file.
"""

import concurrent.futures
import contextlib
import copy
import json
import multiprocessing
import pathlib
import time

from mtl.shell.config_fingerprint import as_current, flatten

# Keys (dotted prefixes) that do not change a run's results.
IGNORED = (
  'progress_bar',  # the console bar
  'wandb',  # where metrics are mirrored
  'log_every_steps',  # how often training metrics are logged
  'diagnostics_every_steps',  # how often gradient diagnostics are logged
  'checkpoint',  # how often / how many checkpoints are kept
  'dataset.data_dir',  # where the same prepared data lives
  'dataset.manual_dir',  # where the same raw files live
  'workdir_allow_changes',  # the trainer's override of its own check
)


def canonical(value):
  """JSON's view of a value: tuples as lists, keys as strings, sorted."""
  return json.loads(json.dumps(value, sort_keys=True))


def _drop(tree: dict, keys) -> dict:
  out = dict(tree)
  for key in keys:
    *parents, leaf = key.split('.')
    node = out
    for p in parents:
      if not isinstance(node.get(p), dict):
        break
      node[p] = dict(node[p])
      node = node[p]
    else:
      node.pop(leaf, None)
  return out


def _comparable(tree: dict, ignore, chosen) -> dict:
  """The leaves that count: {dotted key: value}."""
  if ignore and isinstance(tree.get('weighting'), dict):
    unused = [f'weighting.{m}' for m in tree['weighting'] if m not in chosen]
    ignore = (*ignore, *unused)
  leaves = flatten(_drop(tree, ignore))
  # Unset (None, empty) is the same as absent: a key another mtl version
  # adds unset changes nothing.
  return {k: v for k, v in leaves.items() if v not in (None, [], {})}


def config_diff(stored: dict, wanted: dict, ignore=()) -> list[str]:
  """'key: stored -> wanted' of every leaf that differs.

  Keys under `ignore` (dotted prefixes) do not count, and, when `ignore` is
  given, neither do the parameters of the weighting methods not chosen.
  """
  stored, wanted = canonical(stored), canonical(wanted)
  chosen = {stored.get('weighting_name'), wanted.get('weighting_name')}
  # An earlier mtl recorded select_best as a bool (True: 'first').
  a = as_current(_comparable(stored, ignore, chosen))
  b = as_current(_comparable(wanted, ignore, chosen))
  # A key an earlier mtl did not have, at its default, changes nothing (the
  # trainer resumes such a workdir).
  defaults = _defaults(wanted) if set(b) - set(a) else {}
  missing = object()
  return [
    f'{k}: {a.get(k, "(none)")!r} -> {b.get(k, "(none)")!r}'
    for k in sorted(set(a) | set(b))
    if a.get(k, missing) != b.get(k, missing)
    and not (k not in a and defaults.get(k, missing) == b[k])
  ]


def _defaults(tree: dict) -> dict:
  """{dotted key: default} of configs/common.py for the tree's model and
  dataset; {} if it cannot be built."""
  try:
    from configs import common

    config = common.base_config(tree['model_name'], tree['dataset_name'])
  except Exception:  # noqa: BLE001 - another mtl, or no configs/ here
    return {}
  return flatten(canonical(config.to_dict()))


def _read(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def resolved(config) -> dict:
  """`config.to_dict()` as the trainer records it in config.json.

  The trainer fills the chosen architecture's unset keywords in with their
  defaults before it writes config.json (mtl.shell.keywords.resolve_model);
  the same is done here, on a copy. A config the trainer would refuse is
  compared as it is (train then says what is wrong).
  """
  config = copy.deepcopy(config)
  try:
    from mtl.core.architectures import ARCHITECTURES
    from mtl.shell import keywords
  except ImportError:  # An mtl without keyword resolution.
    return config.to_dict()
  try:
    keywords.resolve_model(config, ARCHITECTURES)
  except (KeyError, ValueError):
    pass
  return config.to_dict()


def status(workdir, config, ignore=IGNORED) -> tuple[str, str]:
  """('new' | 'finished' | 'resume' | 'stale', why) of a workdir."""
  workdir = pathlib.Path(workdir)
  if not workdir.exists() or (workdir.is_dir() and not any(workdir.iterdir())):
    return 'new', ''
  stored = _read(workdir / 'config.json')
  if stored is None:
    return 'stale', 'no readable config.json'
  diff = config_diff(stored, resolved(config), ignore)
  if not diff:
    done = (workdir / 'results.json').is_file()
    return ('finished' if done else 'resume'), ''
  more = f' (+{len(diff) - 3} more)' if len(diff) > 3 else ''
  return 'stale', 'another config: ' + '; '.join(diff[:3]) + more


def _lock(workdir: pathlib.Path):
  """The trainer's lock of the workdir (a live run holds it), if any."""
  if not workdir.is_dir():
    return contextlib.nullcontext()
  try:
    from mtl.shell.workdir import WorkdirLock
  except ImportError:  # An mtl without workdir locks.
    return contextlib.nullcontext()
  return WorkdirLock(workdir)


def move_aside(workdir) -> pathlib.Path:
  """Renames workdir to <workdir>.stale-<UTC time>[-n]; returns the path.

  Refuses (SystemExit) a workdir a live run holds the lock of.
  """
  workdir = pathlib.Path(workdir)
  stamp = time.strftime('%Y%m%dT%H%M%S', time.gmtime())
  target = workdir.with_name(f'{workdir.name}.stale-{stamp}')
  n = 1
  while target.exists():
    target = workdir.with_name(f'{workdir.name}.stale-{stamp}-{n}')
    n += 1
  try:
    with _lock(workdir):  # Held while renaming: the lock file moves along.
      workdir.rename(target)
  except ValueError as e:  # mtl.errors.WorkdirError: in use.
    raise SystemExit(f'{workdir}: not moved aside: {e}') from e
  return target


def run(config, workdir, *, force: bool = False, ignore=IGNORED) -> dict:
  """The results of `config` trained into `workdir` (see the module doc).

  Args:
    config: the ConfigDict to train (a population if config.population
      names members).
    workdir: the run directory.
    force: train afresh even if the workdir holds this config's results
      (the old workdir is moved aside, not deleted).
    ignore: keys whose difference still lets a run be reused or resumed;
      a script reading more than results.json (e.g. metrics.jsonl) narrows
      it.

  Returns:
    What results.json holds: a single run's flat dict, or a population's
    summary with its 'members' list.
  """
  workdir = pathlib.Path(workdir)
  state, why = status(workdir, config, ignore)
  if force and state != 'new':
    state, why = 'stale', '--force'
  if state == 'finished':
    print(f'{workdir}: finished run of this config, reused', flush=True)
    return json.loads((workdir / 'results.json').read_text())
  if state == 'stale':
    aside = move_aside(workdir)
    print(f'{workdir}: {why}; moved to {aside.name}, re-running', flush=True)
  from mtl.shell import trainer

  t0 = time.time()
  results = trainer.train(config, workdir)
  verb = 'resumed and finished' if state == 'resume' else 'trained'
  print(f'{workdir}: {verb} in {time.time() - t0:.0f} s', flush=True)
  # As results.json holds them, like a reused run's (lists, not tuples).
  done = workdir / 'results.json'
  return json.loads(done.read_text()) if done.is_file() else canonical(results)


def reuse(workdir, config, *, ignore=IGNORED) -> dict:
  """The results of a finished run of `config`; never trains.

  For results another script made: `ignore` lists the keys allowed to
  differ (e.g. 'population' for a population of other members).
  """
  workdir = pathlib.Path(workdir)
  state, why = status(workdir, config, ignore)
  if state != 'finished':
    raise SystemExit(
      f'{workdir}: no finished run of the requested config '
      f'({why or state}); train it first'
    )
  print(f'{workdir}: finished run of this config, reused', flush=True)
  return json.loads((workdir / 'results.json').read_text())


def _run_job(job):
  config, workdir, force, ignore, refused = job
  if not refused:
    return run(config, workdir, force=force, ignore=ignore)
  from mtl.errors import ConfigError

  try:
    return run(config, workdir, force=force, ignore=ignore)
  except ConfigError as e:
    print(f'{workdir}: refused: {e}', flush=True)
    return str(e)


def run_all(
  jobs, *, processes: int = 1, force=False, ignore=IGNORED, refused=False
):
  """`run` over [(config, workdir), ...]; results in the same order.

  processes > 1 runs that many at once, each in its own (spawned) Python
  process: JAX and the trainer's signal handlers want a main thread each;
  the first run (until one is not refused) runs alone, in this process, so
  that the data is prepared once.
  refused: a run the trainer refuses with a ConfigError (e.g. a model that
  the dataset's features cannot feed) gives its one-line message, a str,
  in place of results, and the other runs go on.
  """
  jobs = [(c, pathlib.Path(w), force, ignore, refused) for c, w in jobs]
  if processes <= 1:
    return [_run_job(j) for j in jobs]
  # Runs alone until one trains: it prepares the data, which two processes
  # preparing at once collide on (TFDS renames its incomplete folder).
  done = []
  while len(done) < len(jobs) and (not done or isinstance(done[-1], str)):
    done.append(_run_job(jobs[len(done)]))
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(processes, context) as pool:
    return done + list(pool.map(_run_job, jobs[len(done) :]))
