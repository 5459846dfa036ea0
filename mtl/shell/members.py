"""Who the members of a population are, from `config.population`.

Shell code (it reads a ConfigDict): `members_of` turns the config's lists
into one dict per member; `member_config` is the config a member's own
workdir and W&B run record.
"""

from mtl.errors import ConfigError

LISTS = ('seeds', 'learning_rates', 'task_weights')


def is_population(config) -> bool:
  pop = config.population
  return bool(
    pop.size
    or any(len(pop[k]) for k in LISTS)
    or any(len(v) for v in pop.weighting.values())
  )


def members_of(config, num_tasks: int) -> list[dict]:
  """One dict per member: name, seed, learning_rate, task_weights, weighting.

  Each list in `config.population` has one value per member (or one value for
  all); `size` alone gives seeds config.seed + k.
  """
  pop = config.population
  given = {k: tuple(pop[k]) for k in LISTS if len(pop[k])}
  varied = {k: tuple(v) for k, v in pop.weighting.items() if len(v)}
  given.update({f'weighting.{k}': v for k, v in varied.items()})
  size = pop.size or max((len(v) for v in given.values()), default=0)
  if size < 1:
    raise ConfigError(f'population.size is {pop.size}, expected >= 1')
  lengths = {k: len(v) for k, v in given.items() if len(v) > 1}
  if not pop.size and len(set(lengths.values())) > 1:
    found = ', '.join(f'{k} {n}' for k, n in lengths.items())
    raise ConfigError(
      f'population lists disagree on the number of members ({found}), '
      'expected one length, or 1 value for all'
    )
  for key, values in given.items():
    if len(values) not in (1, size):
      raise ConfigError(
        f'population.{key} has {len(values)} values, expected {size} (one '
        'per member) or 1'
      )
  base_kw = config.weighting.get(config.weighting_name)
  base_kw = {} if base_kw is None else base_kw.to_dict()
  for key in varied:
    if key not in base_kw:
      raise ConfigError(
        f'population.weighting.{key}: {config.weighting_name!r} has no such '
        f'hyper-parameter, expected one of {sorted(base_kw)}'
      )

  def pick(key, k, default):
    values = given.get(key)
    return default if values is None else values[k % len(values)]

  members = []
  for k in range(size):
    m = {
      'seed': int(pick('seeds', k, config.seed + k)),
      'learning_rate': float(
        pick('learning_rates', k, config.optimizer.learning_rate)
      ),
      'task_weights': tuple(
        float(w) for w in pick('task_weights', k, (1.0,) * num_tasks)
      ),
      'weighting': {
        **base_kw,
        **{n: pick(f'weighting.{n}', k, None) for n in varied},
      },
    }
    if len(m['task_weights']) != num_tasks:
      raise ConfigError(
        f'population.task_weights[{k}] has {len(m["task_weights"])} '
        f'weights, expected {num_tasks} (one per task)'
      )
    if not m['learning_rate'] > 0:
      raise ConfigError(
        f'population.learning_rates[{k}] is {m["learning_rate"]}, expected > 0'
      )
    parts = [f'seed={m["seed"]}']
    if 'learning_rates' in given:
      parts.append(f'lr={m["learning_rate"]:g}')
    if 'task_weights' in given:
      parts.append('w=' + ':'.join(f'{w:g}' for w in m['task_weights']))
    parts += [f'{n}={m["weighting"][n]}' for n in varied]
    m['name'] = f'{k:03d}_' + ','.join(parts)
    members.append(m)
  return members


def single_member(config, num_tasks: int) -> dict:
  """A single run as a member: the config's own seed, lr and weights."""
  kw = config.weighting.get(config.weighting_name)
  return {
    'name': None,
    'seed': config.seed,
    'learning_rate': config.optimizer.learning_rate,
    'task_weights': (1.0,) * num_tasks,
    'weighting': {} if kw is None else kw.to_dict(),
  }


def member_config(config, m) -> dict:
  c = config.to_dict()
  c['seed'] = m['seed']
  c['optimizer']['learning_rate'] = m['learning_rate']
  c['weighting'][config.weighting_name] = m['weighting']
  c['member'] = {'name': m['name'], 'task_weights': list(m['task_weights'])}
  return c
