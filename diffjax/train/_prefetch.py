"""A bounded background producer of the batches ``data_fn(s)``, ``s = start, start + 1, ...``.

The batch of step ``s`` stays a pure function of ``s`` (the thread only changes *when* it is
computed), so a run with prefetching is bit-identical to one without, and resume stays exact.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Prefetcher"]

_POLL_S = 0.05  # how often a blocked producer checks whether it should stop


class Prefetcher:
    """Iterate ``produce(s)`` for ``s`` in ``range(start, stop)``, up to ``depth`` steps ahead.

    ``depth = 0`` calls ``produce`` in the consumer's thread (no thread). Otherwise one daemon
    thread fills a ``queue.Queue(depth)``; an exception raised by ``produce(s)`` is re-raised
    by :meth:`get` for that same step ``s`` (all earlier batches are delivered first). Always
    :meth:`close` (or use as a context manager): it stops and joins the thread.

    Args:
      produce: ``produce(step) -> batch`` (e.g. ``data_fn`` followed by a device transfer).
      start, stop: the step range.
      depth: number of batches produced ahead (``>= 0``).
    """

    def __init__(self, produce: Callable[[int], Any], start: int, stop: int, depth: int):
        self._produce, self._next = produce, start
        self._stop = threading.Event()
        self._thread = None
        if depth > 0 and stop > start:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._work, args=(start, stop), daemon=True,
                                            name="diffjax-prefetch")
            self._thread.start()

    def _work(self, start: int, stop: int) -> None:
        for s in range(start, stop):
            try:
                item = (s, self._produce(s), None)
            except BaseException as e:  # noqa: BLE001 -- handed to the consumer, re-raised there
                item = (s, None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[2] is not None or self._stop.is_set():
                return

    def get(self, step: int):
        """The batch of ``step`` (steps must be requested in order)."""
        if step != self._next:
            raise ValueError(f"batches must be requested in order: expected step {self._next}, got {step}")
        self._next += 1
        if self._thread is None:
            return self._produce(step)
        s, batch, err = self._queue.get()
        if err is not None:
            raise err
        assert s == step, (s, step)
        return batch

    def close(self) -> None:
        """Stop the producer thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(_POLL_S)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
