"""Many processes, one training loop: torchrun's environment -> a process group -> DDP or FSDP2.

train.py runs the same loop in one process and under `torchrun`; this module holds the few
things that differ. Everything here is PyTorch's own engine (torch.distributed, DDP, FSDP2's
`fully_shard`, the distributed checkpoint state-dict helpers); in a single process every
helper is a no-op, so the single-process path needs no process group.

    torchrun -> env RANK / WORLD_SIZE / LOCAL_RANK -> setup() -> World
    model -> wrap(): DistributedDataParallel, or fully_shard on each block and the root
    gradients: averaged by DDP's all-reduce or FSDP's reduce-scatter
    checkpoints: full_state() gathers full (unsharded) tensors, so they load at any world size
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from redraft.errors import RedraftError

try:  # the public home since torch 2.5; torch 2.4 only has the private one
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover
    from torch.distributed._tensor import DTensor, distribute_tensor


def _fully_shard():
    """FSDP2's fully_shard: public in torch.distributed.fsdp since 2.6, private before."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError:
            raise RedraftError(f"train.parallel='fsdp' needs FSDP2 (fully_shard), which torch "
                               f"{torch.__version__} lacks: use 'ddp' or a newer torch") from None
    return fully_shard


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether setup() started the process group (and close ends it)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes logs and checkpoints."""
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @contextmanager
    def main_first(self):
        """Run the body on rank 0 first, then on the others (e.g. building a shared cache)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over all ranks (float64)."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (on every rank)."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup(device: str) -> World:
    """The World of this process: under torchrun (WORLD_SIZE > 1) it joins the process group.

    Backend: NCCL for CUDA, gloo otherwise (CPU). Under torchrun a CUDA run puts each
    process on the GPU of its LOCAL_RANK, whatever index train.device names.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise RedraftError("WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets "
                           "them)") from None
    dev = torch.device(device)
    if world_size <= 1:
        return World(device=dev)
    if "MASTER_ADDR" not in os.environ and not dist.is_initialized():
        raise RedraftError(f"WORLD_SIZE={world_size} but no MASTER_ADDR: launch several "
                           "processes with torchrun (see docs/distributed.md)")
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = _restart_store(world_size)
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=world_size)
    return World(dist.get_rank(), dist.get_world_size(), dev, owns)


def _restart_store(world_size: int):
    """The key-value store for the process group when torchrun lends its own, else None.

    torchrun (--max-restarts) lets the workers share its rendezvous store, which outlives a
    restart; the default init then reads the dead attempt's addresses and fails to connect
    (pytorch/pytorch#135712). Keys under a per-attempt prefix keep each restart apart.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"redraft/attempt-{attempt}", store)


def split_batch(batch_size: int, grad_accum: int, world_size: int) -> tuple[int, int]:
    """(sequences per rank, sequences per micro-batch) of a global batch_size."""
    if batch_size % (world_size * grad_accum):
        raise RedraftError(f"train.batch_size={batch_size} (the global batch) is not divisible "
                           f"by world_size * train.grad_accum = {world_size} * {grad_accum}")
    per_rank = batch_size // world_size
    return per_rank, per_rank // grad_accum


def wrap(model: torch.nn.Module, parallel: str, world: World) -> torch.nn.Module:
    """The module the training forward calls: the model itself, DDP around it, or FSDP2.

    fully_shard changes `model` in place (its parameters become sharded DTensors), so the
    caller keeps using `model` for parameters, EMA and state dicts in every mode.
    """
    if world.world_size == 1:
        return model
    if parallel == "fsdp":
        fully_shard = _fully_shard()
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(world.device.type, (world.world_size,))
        # One unit per block, so only one block's full weights exist at a time, then the root
        # for the embeddings (tied to the output head) and the final norm.
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    ids = [world.device] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def grad_sync(net: torch.nn.Module, enabled: bool):
    """Context for one micro-batch's backward: skip the gradient exchange unless `enabled`
    (the last micro-batch), so accumulation communicates once per optimizer step."""
    if isinstance(net, DistributedDataParallel):
        return nullcontext() if enabled else net.no_sync()
    if hasattr(net, "set_requires_gradient_sync"):  # FSDP2
        net.set_requires_gradient_sync(enabled)
    return nullcontext()


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded DTensor (collective: every rank must call it)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def like(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A full tensor `value` laid out like `param` (sharded the same way under FSDP)."""
    if isinstance(param, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value.to(param.device)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts on CPU (complete on rank 0; collective).

    The optimizer's state is keyed by parameter name rather than position, so a checkpoint
    written by any world size and mode loads into any other.
    """
    return (get_model_state_dict(model, options=_FULL),
            get_optimizer_state_dict(model, optimizer, options=_FULL))


def load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full_state() optimizer state dict (sharding it like the model's parameters)."""
    first = state["param_groups"][0]["params"][:1] if state.get("param_groups") else []
    if first and isinstance(first[0], int):
        # Checkpoints before distributed training keyed parameters by position.
        if any(isinstance(p, DTensor) for p in model.parameters()):
            raise RedraftError("this checkpoint's optimizer state predates sharded training: "
                               "resume it once with train.parallel='ddp' or one process")
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))


__all__ = ["World", "full", "full_state", "grad_sync", "like", "load_optimizer", "setup",
           "split_batch", "wrap"]
