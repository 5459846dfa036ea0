"""mtl: multi-task recommendation models and task balancing in JAX/Flax."""

__version__ = '0.1.0'
