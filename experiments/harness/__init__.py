"""What the experiment scripts share: runner, command line, results, stats.

  run(config, workdir)       train, or reuse a finished run of this config
  reuse(workdir, config)     a finished run's results, never trains
  run_all(jobs, processes)   run over [(config, workdir)], N processes
  define_flags(...)          the shared absl flags: --out, --workdirs,
                             --force, --seeds
  run_main(main)             app.run, logs at WARNING unless --verbosity
  write_results(name, record, markdown, figures=...)
                             <stem>.json, .md (+ command, date, machine),
                             .png
  stats                      mean_std, standard_error, diff_in_se,
                             paired_diff_in_se

A script starts with

  REPO = pathlib.Path(__file__).resolve().parents[1]
  sys.path.insert(0, str(REPO))  # configs/ and experiments/
  from experiments import harness
"""

from experiments.harness import stats
from experiments.harness.cli import (
  FLAGS,
  REPO,
  census_config,
  census_config_path,
  define_flags,
  floats,
  run_main,
)
from experiments.harness.results import (
  RESULTS,
  command_line,
  machine_facts,
  markdown_table,
  portable,
  provenance,
  pyplot,
  results_stem,
  save_figure,
  write_json,
  write_markdown,
  write_results,
)
from experiments.harness.runner import (
  IGNORED,
  canonical,
  config_diff,
  move_aside,
  reuse,
  run,
  run_all,
  status,
)

__all__ = [
  'FLAGS',
  'IGNORED',
  'REPO',
  'RESULTS',
  'canonical',
  'census_config',
  'census_config_path',
  'command_line',
  'config_diff',
  'define_flags',
  'floats',
  'machine_facts',
  'markdown_table',
  'move_aside',
  'portable',
  'provenance',
  'pyplot',
  'results_stem',
  'reuse',
  'run',
  'run_all',
  'run_main',
  'save_figure',
  'stats',
  'status',
  'write_json',
  'write_markdown',
  'write_results',
]
