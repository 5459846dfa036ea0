"""The experiment scripts (run as `python experiments/<name>.py`) and harness.

Not part of the mtl package: the scripts reproduce the numbers the README
cites from experiments/results/; `experiments.harness` is what they share.
"""
