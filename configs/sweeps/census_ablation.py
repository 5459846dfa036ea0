"""Architecture x balancing method x seeds on census-income (group 1, paper
protocol): 3 architectures x 4 methods x 5 seeds, each cell one population.

  mtl-sweep --sweep=configs/sweeps/census_ablation.py --root=workdirs/sweeps
  mtl-sweep --sweep=configs/sweeps/census_ablation.py --export_wandb
"""


def get_sweep():
  return dict(
    name='census_ablation',
    configs=[
      'configs/census.py:shared_bottom',
      'configs/census.py:mmoe',
      'configs/census.py:ple',
    ],
    grid={'weighting_name': ['equal', 'uncertainty', 'gradnorm', 'pcgrad']},
    seeds=[0, 1, 2, 3, 4],
    overrides={'progress_bar': False},
    metric='val/auc/income',
  )
