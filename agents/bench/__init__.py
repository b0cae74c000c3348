"""Head-to-head benchmark: agent variants × tasks × seeds with identical budgets (``ospo-gym bench``).

Protocol, the same for every agent of a task:

* the same tiny Qwen2 per seed (:func:`ospo_gym.agents.tiny_policy.build_env_policy`: weights seeded by the seed,
  and the task's warm start), so every agent of a seed starts from the same weights;
* the same number of steps, prompts per step and group size G (the task's settings, then the command line's
  overrides); the per-step prompts and sampling seeds derive from ``(seed, step)``, so they match across agents
  until the policies differ;
* evaluation at step 0, every ``eval_every`` steps and at the end: mean reward over *all* the env's prompts,
  ``eval_samples`` sampled completions each, with a fixed sampling seed (``eval_seed``).

The modules, in the order a benchmark uses them: :mod:`~ospo_gym.agents.bench.presets` (tasks, variants,
presets), :mod:`~ospo_gym.agents.bench.plan` (a preset with the command line's overrides),
:mod:`~ospo_gym.agents.bench.harness` (:func:`run_bench`), :mod:`~ospo_gym.agents.bench.pool` (in this process
or in ``jobs`` spawned workers, one torch thread each), :mod:`~ospo_gym.agents.bench.runner` (one run),
:mod:`~ospo_gym.agents.bench.report` (summary, ``results.md``, PNG curves).
"""

from ospo_gym.agents.bench.harness import check_outputs, run_bench, versions
from ospo_gym.agents.bench.plan import Plan, PlanError, make_plan
from ospo_gym.agents.bench.presets import PRESETS, SHIFTED_BM25, TASKS, Preset, Task, Variant
from ospo_gym.agents.bench.report import RESULTS_JSON, RESULTS_MD, console_summary

__all__ = [
    "PRESETS",
    "RESULTS_JSON",
    "RESULTS_MD",
    "SHIFTED_BM25",
    "TASKS",
    "Plan",
    "PlanError",
    "Preset",
    "Task",
    "Variant",
    "check_outputs",
    "console_summary",
    "make_plan",
    "run_bench",
    "versions",
]
