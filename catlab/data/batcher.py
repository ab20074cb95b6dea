"""Batcher: a deterministic, shardable, exactly resumable stream of training batches (from memory, or rows
read from a memory-mapped latent store)."""
from __future__ import annotations

import torch

from catlab.data.base import ImageSet, mix_seed
from catlab.data.pyramid import to_float


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a permutation of range(n) that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(n, generator=g)                                  # (n,)


class Batcher:
    """Infinite stream of (images float [-1, 1] (B, C, R, R), labels (B,)).

    The stream reads one permutation per epoch (seeded by (seed, epoch)); rank r of `world` reads
    perm[r::world], cut to n // world so that every rank sees as many samples per epoch and the shards
    are disjoint. Batches run on across epoch ends, so the sample sequence does not depend on the
    batch size and a set smaller than a batch still works. The images live on `device` as uint8
    (float sets, i.e. latents, as they are, and batches come out as float32 without any mapping);
    a batch is an index gather, so training never waits for data. `state_dict()` holds (epoch,
    position); `load_state_dict` resumes the stream exactly.

    A memory-mapped latent store (a LatentSet with a `reader`, catlab.data.store) stays on disk: the
    labels and the order live on the CPU, each batch's rows are read by the reader and moved to `device`.
    The stream (order, shards, resume) is the same as for the same set in memory, batch for batch.
    """

    def __init__(self, imageset: ImageSet, batch: int, seed: int = 0, device="cpu", rank: int = 0,
                 world: int = 1):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got {rank}")
        n = len(imageset)
        if n < world:
            raise ValueError(f"a set of {n} images cannot be sharded over {world} ranks")
        self.batch, self.seed, self.rank, self.world = batch, seed, rank, world
        self.device = torch.device(device)
        self.reader = getattr(imageset, "reader", None)                 # rows from disk (a store), or None
        self.home = torch.device("cpu") if self.reader is not None else self.device
        self.images = imageset.images if self.reader is not None else imageset.images.to(self.device)  # (N, C, R, R)
        self.labels = imageset.labels.to(self.home)                     # (N,)
        self.n = n
        self.shard_size = n // world
        self.epoch = 0
        self.position = 0                                               # next sample within this epoch's shard
        self._order_epoch = None
        self._order = None

    def _shard(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, on the device (cached per epoch)."""
        if self._order_epoch != self.epoch:
            perm = epoch_permutation(self.n, self.seed, self.epoch)
            self._order = perm[self.rank::self.world][:self.shard_size].to(self.home, non_blocking=True)
            self._order_epoch = self.epoch
        return self._order

    def next_indices(self) -> torch.Tensor:
        """Indices of the next batch (advances the stream)."""
        parts, need = [], self.batch
        while need:
            order = self._shard()
            take = min(need, self.shard_size - self.position)
            parts.append(order[self.position:self.position + take])
            self.position += take
            need -= take
            if self.position == self.shard_size:
                self.epoch, self.position = self.epoch + 1, 0
        return parts[0] if len(parts) == 1 else torch.cat(parts)            # (B,)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.next_indices()
        if self.reader is not None:                                     # (B, C, R, R) read from the store
            return self.reader(idx).to(self.device).float(), self.labels[idx].to(self.device)
        x = self.images[idx]
        return (to_float(x) if x.dtype == torch.uint8 else x.float()), self.labels[idx]

    def __iter__(self):
        return self

    @property
    def batches_per_epoch(self) -> float:
        return self.shard_size / self.batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.shard_size:
            raise ValueError(f"bad Batcher state epoch={epoch} position={position} (shard size {self.shard_size})")
        if state.get("seed", self.seed) != self.seed or state.get("world", self.world) != self.world:
            raise ValueError(f"Batcher state was saved with seed={state.get('seed')} world={state.get('world')}, "
                             f"but this Batcher has seed={self.seed} world={self.world}")
        self.epoch, self.position = epoch, position
