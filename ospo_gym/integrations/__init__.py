"""Adapters that run ospo-gym's environments and credit assignment inside other trainers (optional extras).

* :mod:`ospo_gym.integrations.trl` — TRL (``pip install 'ospo-gym[trl]'``): ``prompt_dataset(env)``,
  ``reward_function(env)`` and ``OSPOTrainer`` / ``OSPOConfig``, a ``trl.GRPOTrainer`` whose token advantages
  come from ospo-gym's estimator registry.
* :mod:`ospo_gym.integrations.verifiers` — verifiers (``pip install 'ospo-gym[verifiers]'``): ``load_environment(env)``,
  a ``vf.SingleTurnEnv`` of the env's prompts whose rubric is the env's reward; also a verifiers environment module
  (``vf-eval ospo_gym.integrations.verifiers``).
* :mod:`ospo_gym.integrations.common` — what every adapter needs of an env (``ospo_env``); core only.

Nothing here is imported by ``import ospo_gym``: each adapter imports its trainer only when it is imported itself.
"""
