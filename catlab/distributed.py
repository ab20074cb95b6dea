"""Scale-out: one process per device under torchrun; gradients averaged by hand after each backward.

    torchrun --nproc_per_node 2 -m catlab train train.batch=64 ...

`init(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
starts the process group: gloo on CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK). Without WORLD_SIZE
(or with WORLD_SIZE=1) it is one process, and every function here is a no-op. What the trainer relies on:

- `train.batch` is the global batch. Each rank takes batch / world samples, its Batcher shard of one
  shared permutation per epoch (rank r reads rows r::world), and gradients are averaged, so 2 ranks at
  batch B take the step that 1 process at batch B takes, up to the order of float reductions.
- Randomness is a function of (seed, rank, step): `StepRNG.begin(step)` reseeds torch's generators per
  rank (the regulariser's noise) and one z generator shared by all ranks. z is drawn for the global batch
  and sliced rows rank::world (the Batcher's interleaving), so the union of the ranks' z is the z of a
  single process. No RNG state has to be gathered at a checkpoint: resume at any step is exact.
- Only rank 0 writes (run dir, metrics, MLflow, sample grids, checkpoints). Every rank reads the same
  checkpoint on resume, and stats are averaged over ranks, so a non-finite loss stops every rank at once.
- D is called several times per step with requires_grad toggled, so the networks are not wrapped in
  DistributedDataParallel: `all_reduce_grads` runs after backward, on whatever grads exist (the same set on
  every rank). It does not overlap communication with backward; the price is one bucketed all-reduce per
  update.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist

from catlab.data.base import mix_seed
from catlab.errors import UserError

BUCKET = 1 << 24                       # elements per all-reduce bucket (64 MiB of fp32)


@dataclass(frozen=True)
class Env:
    """Where this process sits: rank of world, and its device."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owned: bool = False                # this module started the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"--nproc_per_node must be at most the {torch.cuda.device_count()} visible GPUs, "
                        f"but got local_rank={local_rank}")
    return torch.device("cuda", local_rank)


def init(device: torch.device) -> Env:
    """The process group from torchrun's env vars (or the caller's, if it started one); one process otherwise."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return Env(rank, world, local, _rank_device(device, local))
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Env(device=device)
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    device = _rank_device(device, local)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                device_id=device if cuda else None)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"WORLD_SIZE={world} is set but the process group does not start "
                        f"({str(e).splitlines()[0][:200]}); launch with torchrun --nproc_per_node N "
                        "-m catlab train ...") from None
    return Env(rank, world, local, device, owned=True)


def shutdown(env: Env, clean: bool = True) -> None:
    """End the process group this module started. On a clean exit the ranks first meet at a barrier, so
    none tears down its gloo/nccl connections while another is still writing (rank 0's last checkpoint);
    a rank that left early made its peer abort at exit now and then. After an error there is no barrier:
    the peers may never arrive, and torchrun stops them."""
    if env.owned and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


# ---- collectives (no-ops in one process) --------------------------------------------------------
@torch.no_grad()
def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average .grad over ranks, in flat buckets per dtype (params without a grad are skipped)."""
    if not active():
        return
    world = dist.get_world_size()
    grads = [p.grad for p in params if p.grad is not None]
    for dtype in {g.dtype for g in grads}:
        group = [g for g in grads if g.dtype == dtype]
        start = 0
        while start < len(group):
            end, size = start, 0
            while end < len(group) and (end == start or size + group[end].numel() <= BUCKET):
                size += group[end].numel()
                end += 1
            bucket = torch.cat([g.reshape(-1) for g in group[start:end]])
            dist.all_reduce(bucket)
            bucket /= world
            offset = 0
            for g in group[start:end]:
                g.copy_(bucket[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            start = end


def mean_stats(stats: dict) -> dict:
    """Average a dict of scalar tensors over ranks (one all-reduce); every rank has the same keys."""
    if not active() or not stats:
        return stats
    values = torch.stack([v.detach().float().reshape(()) for v in stats.values()])
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(stats, values.unbind()))


def agree(obj):
    """Rank 0's value of obj on every rank (e.g. an abort reason that only rank 0's hook computes)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable):
    """fn() on rank 0 only; its result (or its error, as a one-line UserError) on every rank."""
    if not active():
        return fn()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:
            dist.broadcast_object_list([("error", isinstance(e, UserError), str(e))], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        _, user, message = box[0]
        raise (UserError if user else RuntimeError)(message if user else f"rank 0 failed: {message}")
    return box[0][1]


# ---- randomness ---------------------------------------------------------------------------------
class StepRNG:
    """Random streams that are functions of (seed, rank, step), so resume needs no saved RNG state.

    begin(step): torch's default generators <- mix(seed, rank, step) (per-rank noise), and the shared z
    generator <- mix(seed, -1, step). z(n, dim): the global batch of z (n * world rows) drawn on every
    rank, this rank's rows rank::world (the rows of the Batcher's shard of the global batch).
    """

    def __init__(self, seed: int, rank: int = 0, world: int = 1, device="cpu"):
        self.seed, self.rank, self.world = seed, rank, world
        self.device = torch.device(device)
        self.gen = torch.Generator(self.device)

    def begin(self, step: int) -> None:
        noise = mix_seed(self.seed, self.rank, step)
        torch.random.default_generator.manual_seed(noise)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(noise)                 # this rank's device only (not every visible GPU)
        self.gen.manual_seed(mix_seed(self.seed, -1, step))

    def z(self, n: int, dim: int) -> torch.Tensor:
        z = torch.randn(n * self.world, dim, generator=self.gen, device=self.device)   # (n * world, dim)
        return z[self.rank::self.world]                                                # (n, dim)
