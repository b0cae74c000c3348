"""ospo-gym: generative search as Gymnasium environments, with Owen-Shapley credit assignment.

Importing the package registers every environment id (``ospo/...``) with Gymnasium. It stays light: numpy,
scipy and gymnasium only; torch is imported by :mod:`ospo_gym.agents` alone.
"""

from ospo_gym.registration import ENV_IDS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
