"""Data-parallel training with ``torch.distributed``: the process group under ``torchrun``, the rank's share of a
step's batch, and the few collectives the agent needs (gradients themselves go through DDP or FSDP2).

A step's global batch is ``prompts_per_step`` groups of ``group_size`` completions. Rank ``r`` of ``W`` takes the
contiguous groups ``r·P/W ... (r+1)·P/W − 1`` (every group on one rank, so group baselines stay local) and the
rows of those groups, ``first_row = r·B/W``. Sampling and coalition draws are keyed by global row, so the
completions and credits a rank computes are the ones a single process computes for those rows.

Run with ``torchrun --nproc_per_node N -m ospo_gym.cli.train ...``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous variables come from torchrun; the backend is ``nccl`` on GPUs and ``gloo`` on CPUs.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the data-parallel group (``size == 1``: no process group, collectives are no-ops)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` items (``count`` divisible by the world size)."""
        per_rank = count // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    # -- collectives (identity without a process group) ------------------------------------------------------
    def sum(self, values: np.ndarray | float) -> np.ndarray:
        """Element-wise sum over ranks, as float64."""
        return self._all_reduce(values, "SUM")

    def max(self, values: np.ndarray | float) -> np.ndarray:
        """Element-wise maximum over ranks, as float64."""
        return self._all_reduce(values, "MAX")

    def _all_reduce(self, values: np.ndarray | float, op: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if not self.active:
            return array
        tensor = torch.as_tensor(array.reshape(-1), dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
        return tensor.cpu().numpy().reshape(array.shape)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (small, picklable, produced by this library), in rank order."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(device: str | None = None) -> World:
    """The :class:`World` of this process; joins (or creates) the default process group when launched by torchrun.

    ``device``: the agent's configured device; ``None`` or ``"cuda"`` under torchrun on a GPU machine means
    ``cuda:LOCAL_RANK``, which this call makes current.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or (size <= 1 and not dist.is_initialized()):
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        # gloo's worker threads abort the interpreter at exit ("terminate called without an active exception")
        # unless the group is destroyed while Python is still alive
        atexit.register(shutdown)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank)


def shutdown(*, synchronize: bool = False) -> None:
    """Destroy the default process group if there is one; ``synchronize`` first waits for every rank (so that no
    rank tears its connections down while another still uses them). Safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def device_for(world: World, device: str | None) -> str | None:
    """The torch device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun, else ``device``."""
    if world.active and torch.cuda.is_available() and (device is None or device == "cuda"):
        return f"cuda:{world.local_rank}"
    return device


def parallelize(model: torch.nn.Module, world: World, parallelism: str) -> torch.nn.Module:
    """The module the loss runs through: ``model`` itself in one process; under torchrun DDP's wrapper, or, for
    ``parallelism="fsdp"``, ``model`` sharded in place with FSDP2's ``fully_shard`` (each decoder layer, named
    by the model's ``_no_split_modules``, then the root)."""
    if not world.active:
        return model
    if parallelism == "fsdp":
        from torch.distributed.fsdp import fully_shard

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        layer_names = set(getattr(base, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in layer_names:
                fully_shard(module)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def full_state_dicts(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, sharded: bool
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(model or None, optimizer)`` state dicts with full tensors on the CPU; a collective under FSDP2 (every
    rank must call it).

    The optimizer's is always indexed like ``optimizer.state_dict()`` (entry ``i``: the ``i``-th trainable
    parameter), so a checkpoint resumes in one process, under DDP or under FSDP2 alike. The model's is gathered
    only for a ``sharded`` model (it cannot ``save_pretrained`` itself), with tied weights saved once.
    """
    if not sharded:
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    unique = {name for name, _ in model.named_parameters()}
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - unique
    model_state = {k: v for k, v in model_state.items() if k not in tied}
    if not optimizer.state:  # nothing learnt yet; get_optimizer_state_dict would take a zero-gradient step
        return model_state, optimizer.state_dict()
    named = get_optimizer_state_dict(model, optimizer, options=options)
    if "state" not in named:  # full state dicts offloaded to the CPU live on rank 0 only
        return model_state, {}
    index = {name: i for i, name in enumerate(_trainable_names(model))}
    return model_state, {
        "state": {index[name]: value for name, value in named["state"].items()},
        "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in named["param_groups"]],
    }


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], *, sharded: bool
) -> None:
    """Inverse of :func:`full_state_dicts` for the optimizer (sharded again under FSDP2)."""
    if not sharded:
        optimizer.load_state_dict(state)
        return
    if not state["state"]:  # a fresh optimizer is the same; loading would take a zero-gradient step
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _trainable_names(model)
    named = {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True))


def _trainable_names(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters in ``model.parameters()`` order (the optimizer's indices)."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
