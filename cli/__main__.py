"""``python -m ospo_gym.cli ...``: the ``ospo-gym`` command."""

import sys

from ospo_gym.cli import main

if __name__ == "__main__":
    sys.exit(main())
