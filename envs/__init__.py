"""Environment classes, installed as ``ospo_gym.envs``."""
