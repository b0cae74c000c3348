"""Agents (GRPO, OSPO-PROP, OSPO-RANK) that learn in the ospo-gym environments; needs the ``agents`` extra."""
