"""The batching queue: chunks of concurrent requests decoded together by one worker thread.

    queue = BatchingQueue(decode_batch, max_batch=16, max_wait_ms=10, max_queue=256)
    queue.start()
    hyps = await queue.decode(chunks, options)   # in the event loop; raises QueueFull when too much is waiting
    queue.stop()

`decode_batch(waveforms, options) -> [Hypothesis]` runs in the worker thread only, so the model is used by one
thread and the event loop never waits on it. The worker takes the oldest waiting chunk, then keeps collecting for at
most `max_wait_ms` (or until `max_batch` chunks) and decodes what it has, grouped by decoding options (a batch is one
search). It only waits while more is on its way: the server wraps reading and cutting a request's audio in
`with queue.expecting():`, so a lone request is decoded at once and pays no wait. On 2 cores a batch of 16 short
chunks costs little more than one (the decoder's per-step work is small matrices, and the step overhead is paid
once per batch), which is where concurrent throughput comes from. `max_batch=1` is one-chunk-at-a-time decoding,
the reference that scripts/bench_serve.py compares against.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from torch import Tensor

from asr.decoding.options import DecodingOptions
from asr.decoding.search import Hypothesis

log = logging.getLogger("asr.serve")

DecodeBatch = Callable[[list[Tensor], DecodingOptions], list[Hypothesis]]


class QueueFull(RuntimeError):
    """More chunks are waiting than the queue holds: the request is refused (HTTP 503), nothing else is touched."""


@dataclass
class QueueStats:
    requests: int = 0  # decode() calls accepted
    chunks: int = 0  # chunks decoded
    batches: int = 0  # decode_batch calls
    largest_batch: int = 0  # most chunks in one decode_batch call
    rejected: int = 0  # decode() calls refused with QueueFull
    failed_batches: int = 0  # decode_batch calls that raised (their requests get the error; the worker goes on)
    pending: int = 0  # chunks waiting now
    busy_seconds: float = 0.0  # wall time spent in decode_batch (against uptime: how loaded the worker is)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(eq=False)  # identity: items are removed from the deque one by one
class _Item:
    chunk: Tensor
    options: DecodingOptions
    future: concurrent.futures.Future


class BatchingQueue:
    def __init__(self, decode_batch: DecodeBatch, max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 256):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                f"the batching queue needs max_batch >= 1, max_queue >= 1 and max_wait_ms >= 0 "
                f"(got {max_batch}, {max_queue}, {max_wait_ms})"
            )
        self.decode_batch = decode_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.stats = QueueStats()
        self._waiting: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._expected = 0  # requests being read and cut, whose chunks will arrive soon

    @contextlib.contextmanager
    def expecting(self):
        """Around the work that precedes `decode` (reading, cutting): the worker waits for these chunks."""
        with self._cond:
            self._expected += 1
        try:
            yield
        finally:
            with self._cond:
                self._expected -= 1
                self._cond.notify()

    def start(self) -> None:
        """Run the worker in a thread of its own (tests, notebooks; `asr serve` runs it in the main thread)."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self.run, name="asr-decode", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish what is waiting, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """The worker loop in the calling thread, until `stop()` has been called and nothing is waiting, or until
        `until()` is true (checked a few times a second). Decoding from the main thread is faster: on this CPU
        torch's two OpenMP threads run a non-main thread's small matmuls about 2x slower (see the README)."""
        while True:
            batch = self._next_batch(until)
            if not batch:
                break
            self._decode(batch)
        with self._cond:  # ended by until(): whatever still waits will not be decoded
            left = list(self._waiting)
            self._waiting.clear()
            self.stats.pending = 0
        for item in left:
            item.future.set_exception(RuntimeError("the server is shutting down"))

    def submit(self, chunks: Sequence[Tensor], options: DecodingOptions) -> list[concurrent.futures.Future]:
        """Queue one request's chunks (all or none): a future per chunk. Thread-safe."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the batching queue has stopped")
            if len(self._waiting) + len(chunks) > self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(
                    f"the server is busy: {len(self._waiting)} chunks are waiting to be decoded "
                    f"(queue length {self.max_queue}); try again shortly"
                )
            items = [_Item(c, options, concurrent.futures.Future()) for c in chunks]
            self._waiting.extend(items)
            self.stats.requests += 1
            self.stats.pending = len(self._waiting)
            self._cond.notify()
        return [i.future for i in items]

    async def decode(self, chunks: Sequence[Tensor], options: DecodingOptions) -> list[Hypothesis]:
        """One request's chunks -> their hypotheses, in order, awaited without blocking the event loop."""
        if not chunks:
            return []
        futures = self.submit(chunks, options)
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    # --- the worker thread -------------------------------------------------------------------------------------

    def _next_batch(self, until: Callable[[], bool] | None = None) -> list[_Item]:
        with self._cond:
            while not self._waiting and not self._stopping:
                if until is not None and until():
                    return []
                self._cond.wait(0.2 if until is not None else None)
            if not self._waiting:
                return []
            # The first chunk is here: wait up to max_wait for company while more is on its way and there is room.
            deadline = time.monotonic() + self.max_wait
            while len(self._waiting) < self.max_batch and self._expected > 0 and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first = self._waiting[0].options
            batch = [i for i in list(self._waiting)[: self.max_batch] if i.options == first]  # one search per batch
            for item in batch:
                self._waiting.remove(item)
            self.stats.pending = len(self._waiting)
            return batch

    def _decode(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            hyps = self.decode_batch([i.chunk for i in batch], batch[0].options)
        except Exception as e:  # a failed batch fails its requests, never the worker
            log.exception("decoding a batch of %d chunks failed", len(batch))
            self.stats.failed_batches += 1
            for item in batch:
                item.future.set_exception(e)
            return
        finally:
            self.stats.busy_seconds += time.perf_counter() - start
        self.stats.batches += 1
        self.stats.chunks += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for item, h in zip(batch, hyps):
            item.future.set_result(h)
