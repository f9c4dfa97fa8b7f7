"""Length-bucketed dynamic batching: utterances of similar duration share a batch, capped by total padded frames.

    BucketBatchSampler(durations, max_frames=20000) -> iterates lists of dataset indices

Sorting by duration keeps padding small; the cap on (longest utterance x batch size) keeps memory flat however
long the utterances are. Batch order and composition change each epoch (seed + epoch), the number of batches does
not; under data parallelism each rank takes every world_size-th batch, so ranks see different data and the same
number of steps.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        durations: Sequence[float],
        max_frames: int,
        max_batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        frame_rate: float = 100.0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.frames = [max(1, int(d * frame_rate)) for d in durations]
        self.max_frames, self.max_batch_size = max_frames, max_batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self._cached: tuple[int, list[list[int]]] | None = None
        self._target: int | None = None  # batches per epoch (before the split across ranks)
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """After a mid-epoch restart: the next pass over `epoch` skips the batches it already trained on.
        Batch order depends only on (seed, epoch), so the skipped batches are exactly those."""
        self._resume = (epoch, batches_done)

    def _batches(self) -> list[list[int]]:
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self._make_batches())
        return self._cached[1]

    def _pack(self, jitter: list[float] | None) -> list[list[int]]:
        """Greedy packing in order of (jittered) length: a batch closes when the next utterance would take its
        padded frames over max_frames or its size over max_batch_size. Batches are index lists, shortest first."""
        n = len(self.frames)
        order = sorted(range(n), key=lambda i: self.frames[i] * (jitter[i] if jitter else 1.0))
        batches, current, longest = [], [], 0
        for i in order:
            longest_if_added = max(longest, self.frames[i])
            if current and (
                longest_if_added * (len(current) + 1) > self.max_frames or len(current) >= self.max_batch_size
            ):
                batches.append(current)
                current, longest_if_added = [], self.frames[i]
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        return batches

    def _jitter(self, rng: random.Random) -> list[float] | None:
        return [rng.uniform(0.95, 1.05) for _ in self.frames] if self.shuffle else None

    def _make_batches(self) -> list[list[int]]:
        # Every epoch has the same number of batches: Lightning reads len() once and validates when an epoch's
        # batch count reaches it, so an epoch one batch short of epoch 0 skipped its validation (and checkpoint
        # ranking kept the previous epoch's WER).
        if self._target is None:
            self._target = max(len(self._pack(self._jitter(random.Random(self.seed + e)))) for e in range(4))
        rng = random.Random(self.seed + self.epoch)
        batches = None
        # Lengths jittered a little when shuffling, so batch composition changes between epochs; a packing with
        # more batches than the target is drawn again (the target is the most of four draws: rarely needed).
        for _ in range(8 if self.shuffle else 0):
            candidate = self._pack(self._jitter(rng))
            if len(candidate) <= self._target:
                batches = candidate
                break
        if batches is None:
            batches = self._pack(None)
        while len(batches) < self._target:  # halve the largest batch: still under both caps
            big = max(range(len(batches)), key=lambda j: len(batches[j]))
            b = batches.pop(big)
            batches[big:big] = [b[: len(b) // 2], b[len(b) // 2 :]]
        if self.shuffle:
            rng.shuffle(batches)
        if self.world_size > 1:  # equal step count on every rank: drop the remainder
            usable = len(batches) - len(batches) % self.world_size
            batches = batches[self.rank : usable : self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if self._resume is not None and self._resume[0] == self.epoch:
            batches = batches[self._resume[1] :]
            self._resume = None
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())

    def padding_fraction(self) -> float:
        """Share of frames in the batches that are padding (measured, for logging)."""
        total = real = 0
        for b in self._batches():
            total += max(self.frames[i] for i in b) * len(b)
            real += sum(self.frames[i] for i in b)
        return 1.0 - real / max(total, 1)
