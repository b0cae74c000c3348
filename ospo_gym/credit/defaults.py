"""The defaults of OSPO's coalition sampling, defined once: every place that offers these knobs (the agent's
config, the TRL config, ``ospo-gym credit``) takes its default from here."""

DEFAULT_W_MAX = 8
"""Widest coalition window, in segments (the paper's ``w_max``)."""

DEFAULT_MAX_COALITIONS = 96
"""The coalition budget ``M``: coalitions evaluated per completion, the empty and the full coalition included."""
