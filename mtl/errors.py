"""The errors a user can cause, by type.

Only these become `mtl-train: error: <one line>` with exit code 2; anything
else is a bug in mtl and keeps its traceback. Each subclasses the builtin a
caller would expect (ValueError, FileNotFoundError), so library callers can
catch either. Messages are one line naming the key, file or row, what was
found and what was expected; `did_you_mean` is their one suggestion.
"""

import difflib


class MtlError(Exception):
  """A problem with the user's input, not with mtl."""


class ConfigError(MtlError, ValueError):
  """A config key, a command-line flag or a name in the config is wrong."""


class DataError(MtlError, ValueError):
  """A data file, a prepared cache or a dataset's contents are wrong."""


class DataFileNotFound(DataError, FileNotFoundError):
  """A raw data file the dataset needs is missing."""


class WorkdirError(MtlError, ValueError):
  """The workdir cannot be used: not writable, locked, or another run's."""


class CheckpointError(WorkdirError):
  """A checkpoint cannot be restored into this run."""


def did_you_mean(word, options, prefix: str = '') -> str:
  """ " (did you mean '<prefix><closest>'?)" for the option closest to
  `word`, or '' when none is close (difflib's ratio >= 0.6)."""
  close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
  return f" (did you mean '{prefix}{close[0]}'?)" if close else ''


class DiskFull(WorkdirError):
  """The disk filled up while a checkpoint or a result was written."""
