"""Adapters that run ospo-gym's environments and credit assignment inside other trainers (optional extras).

* :mod:`ospo_gym.integrations.trl` — TRL (``pip install 'ospo-gym[trl]'``): ``prompt_dataset(env)``,
  ``reward_function(env)`` and ``OSPOTrainer`` / ``OSPOConfig``, a ``trl.GRPOTrainer`` whose token advantages
  come from ospo-gym's estimator registry.

Nothing here is imported by ``import ospo_gym``: each adapter imports its trainer only when it is imported itself.
"""
