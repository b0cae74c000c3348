"""Adapters that run ospo-gym's environments and credit assignment inside other trainers (optional extras).

* :mod:`ospo_gym.integrations.trl` — TRL (``pip install 'ospo-gym[trl]'``): ``prompt_dataset(env)``,
  ``reward_function(env)`` and ``OSPOTrainer`` / ``OSPOConfig``, a ``trl.GRPOTrainer`` whose token advantages
  come from ospo-gym's estimator registry.
* :mod:`ospo_gym.integrations.verifiers` — verifiers (``pip install 'ospo-gym[verifiers]'``): ``load_environment(env)``,
  a ``vf.SingleTurnEnv`` of the env's prompts whose rubric is the env's reward; also a verifiers environment module
  (``vf-eval ospo_gym.integrations.verifiers``).
* :mod:`ospo_gym.integrations.verl` — verl 0.9 (its own virtualenv: verl pins transformers and ray):
  ``prompt_dataset(env, path)`` (verl's parquet), ``OSPORewardManager``, ``OSPOAgentLoopManager`` (OSPO's token
  advantages into ``rm_scores``) and the ``ospo_prop`` / ``ospo_rank`` / ``ospo`` estimators of ``register_adv_est``.
* :mod:`ospo_gym.integrations.common` — what every adapter needs: the env behind an id, its oracle, an estimator.

Nothing here is imported by ``import ospo_gym``: each adapter imports its trainer only when it is imported itself.
"""
