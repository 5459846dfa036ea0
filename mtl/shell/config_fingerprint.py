"""Which config keys change the trained numbers, and their digest (shell).

`fingerprint(config_dict)` is what a workdir records of the config it was
trained with (mtl/shell/config_record.py): every dotted key but
EXCLUDED_KEYS and the unchosen weighting methods' parameters, and the
sha256 of their canonical JSON. `differences` and `summary` say how two
such key sets differ, in one line.

The building blocks are public for the experiments' runner
(experiments/harness/runner.py), which compares configs its own way but
flattens them and reads legacy values as this does (`flatten`,
`as_current`).
"""

import fnmatch
import hashlib
import json
from typing import Any

# Config keys that do not change the trained numbers, so a rerun may change
# them freely (fnmatch patterns on dotted keys; the value says why). Every
# other key counts, new keys included: a key is excluded only when it is
# known not to matter. Besides these, `weighting.<method>.*` counts only for
# the chosen `weighting_name` (the other methods' parameters are unused).
EXCLUDED_KEYS = {
  # Deliberately extendable: rerunning with more epochs resumes and goes on.
  # Note that a cosine schedule's length is num_epochs: the extended run
  # then differs from a fresh run of the new length (a warning says so).
  'num_epochs': 'more epochs resume and continue the run',
  'progress_bar': 'console output only',
  'log_every_steps': 'what is logged, not what is trained',
  'diagnostics_every_steps': 'what is logged, not what is trained',
  'wandb.*': 'where metrics are sent',
  'profile.*': 'which steps a profiler traces, not what they compute',
  'checkpoint.*': 'when and how many checkpoints are kept; resume is exact',
  'eval_batch_size': 'evaluation pads and masks: the same metrics',
  'parallel.*': 'data parallelism runs the same steps on the same batches',
  # Both modes take the same batches of the same permutation through the
  # same step (tests/core/test_train_step.py: scanned device steps == host
  # steps);
  # steps_per_dispatch only groups those steps into compiled calls.
  'input_mode': 'the same batches in the same order through the same step',
  'steps_per_dispatch': 'how many steps one compiled call runs',
  'max_consecutive_nonfinite': 'when a diverging run stops, not its numbers',
  'divergence_factor': 'when a diverging run warns, not its numbers',
  'stop_on_divergence': 'whether a diverging run stops, not its numbers',
  'dataset.data_dir': 'a path: the same prepared data may move',
  'dataset.manual_dir': 'a path: the same raw files may move',
  'dataset.chunksize': 'rows per read while preparing: the same data',
  'dataset.beam_options': 'where the data is prepared: the same bits',
  'workdir_allow_changes': 'the override of this check itself',
  'eval_metrics': "mtl-eval's host-side metrics, not what is trained",
  'plugins': 'modules that register components; the chosen names count',
}

# At most this many differing keys are named in the error, then '...'.
MAX_KEYS_NAMED = 3
MAX_VALUE_CHARS = 40

# Values a key once had, as the value that means the same now.
_LEGACY = {'select_best': {True: 'first', False: 'last'}}


def plain(value):
  """JSON-ready and canonical: tuples become lists, as in config.json."""
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def flatten(value, prefix='') -> dict[str, Any]:
  """A nested dict as {dotted key: leaf}; an empty dict is a leaf."""
  if isinstance(value, dict) and value:
    out = {}
    for k, v in value.items():
      out.update(flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: value}


def is_excluded(key: str, chosen_weighting) -> bool:
  """Whether the dotted `key` does not count (EXCLUDED_KEYS, or a
  parameter of a weighting method other than `chosen_weighting`)."""
  if any(fnmatch.fnmatchcase(key, p) for p in EXCLUDED_KEYS):
    return True
  parts = key.split('.')
  return (
    len(parts) > 2 and parts[0] == 'weighting' and parts[1] != chosen_weighting
  )


def as_current(keys: dict) -> dict:
  """`keys` with legacy values as today's (select_best True: 'first')."""
  return {
    k: _LEGACY[k].get(v, v) if k in _LEGACY and isinstance(v, bool) else v
    for k, v in keys.items()
  }


def canonical(value) -> str:
  """The compact, key-sorted JSON of a value (what the digest hashes)."""
  return json.dumps(value, sort_keys=True, separators=(',', ':'))


def fingerprint(config_dict: dict) -> tuple[str, dict[str, Any]]:
  """The config keys that change the trained numbers, and their digest.

  Args:
    config_dict: the resolved config, `config.to_dict()` (or config.json).

  Returns:
    `(digest, keys)`: `keys` maps each dotted key that counts (every key
    but EXCLUDED_KEYS and the unchosen weighting methods' parameters) to its
    JSON value; `digest` is the sha256 of their canonical JSON.
  """
  flat = as_current(flatten(plain(config_dict)))
  chosen = flat.get('weighting_name')
  keys = {k: v for k, v in sorted(flat.items()) if not is_excluded(k, chosen)}
  return hashlib.sha256(canonical(keys).encode()).hexdigest(), keys


def _show(value) -> str:
  text = canonical(value)
  if len(text) > MAX_VALUE_CHARS:
    text = text[: MAX_VALUE_CHARS - 3] + '...'
  return text


def differences(old: dict, new: dict) -> dict[str, tuple]:
  """Keys in both with other values, in key order: {key: (old, new)}."""
  return {
    k: (old[k], new[k])
    for k in sorted(old.keys() & new.keys())
    if canonical(old[k]) != canonical(new[k])
  }


def summary(diffs: dict[str, tuple]) -> str:
  """'key old -> new, ...' of the first MAX_KEYS_NAMED differences."""
  named = [
    f'{k} {_show(a)} -> {_show(b)}'
    for k, (a, b) in list(diffs.items())[:MAX_KEYS_NAMED]
  ]
  more = len(diffs) - MAX_KEYS_NAMED
  return ', '.join(named) + (f', ... ({more} more)' if more > 0 else '')
