"""The adapters' shared helpers that need no trainer (``ospo_gym.integrations.common``)."""

from __future__ import annotations

from types import SimpleNamespace

from ospo_gym.agents.config import AgentConfig
from ospo_gym.integrations.common import OSPO_KNOBS, ospo_agent_config


def test_ospo_agent_config_copies_every_knob_and_clamps_the_groups():
    # every knob off its AgentConfig default, so that one left out (or read off the wrong name) shows
    knobs = dict(std_ddof=0, w_max=3, max_coalitions=20, contiguous=False, credit_variant="weighted",
                 clip_token_advantages=2.0, seed=7)  # fmt: skip
    assert set(knobs) == set(OSPO_KNOBS)
    defaults = AgentConfig()
    assert all(getattr(defaults, name) != value for name, value in knobs.items())
    settings = ospo_agent_config(
        SimpleNamespace(**knobs), algo="ospo_rank", group_size=4, prompts_per_step=0, scale_rewards="batch",
        max_new_tokens=12,
    )  # fmt: skip
    assert {name: getattr(settings, name) for name in knobs} == knobs
    assert (settings.algo, settings.group_size, settings.prompts_per_step) == ("ospo_rank", 4, 1)
    assert (settings.scale_rewards, settings.max_new_tokens) == ("batch", 12)
