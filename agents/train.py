"""``python -m ospo_gym.agents.train ...``: the ``ospo-gym train`` command as a module, the form ``torchrun`` runs.

One process::

    python -m ospo_gym.agents.train --tiny --steps 50

Data-parallel on one machine (gloo on CPUs, NCCL on GPUs; ``--prompts-per-step`` divisible by the process count)::

    torchrun --standalone --nproc_per_node 2 -m ospo_gym.agents.train --tiny --steps 50 --prompts-per-step 2

Every option is ``ospo-gym train``'s (``--help``); ``--parallelism fsdp`` shards the model with FSDP2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ospo_gym.agents.distributed import shutdown
    from ospo_gym.cli import main as cli_main

    code = cli_main(["train", *(sys.argv[1:] if argv is None else argv)])
    shutdown(synchronize=code == 0)  # on an error the other ranks may never reach the barrier
    return code


if __name__ == "__main__":
    sys.exit(main())
