"""Adapters that run ospo-gym's environments and credit assignment inside other trainers (optional extras).

* :mod:`ospo_gym.integrations.trl` — TRL (``pip install 'ospo-gym[trl]'``): ``prompt_dataset(env)``,
  ``reward_function(env)`` and ``OSPOTrainer`` / ``OSPOConfig``, a ``trl.GRPOTrainer`` whose token advantages
  come from ospo-gym's estimator registry.
* :mod:`ospo_gym.integrations.verl` — verl 0.9 (its own virtualenv: verl pins transformers and ray):
  ``prompt_dataset(env, path)`` (verl's parquet), ``OSPORewardManager``, ``OSPOAgentLoopManager`` (OSPO's token
  advantages into ``rm_scores``) and the ``ospo_prop`` / ``ospo_rank`` / ``ospo`` estimators of ``register_adv_est``.

Nothing here is imported by ``import ospo_gym``: each adapter imports its trainer only when it is imported itself.
"""
