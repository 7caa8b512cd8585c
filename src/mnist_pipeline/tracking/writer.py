"""MLflow writes off the training thread: a tracking server that goes away must not stall training.

The training loop hands each batch of metrics to `BackgroundWriter`, which sends them in order from
a thread of its own. A write that fails (the server or its database gone) is retried with backoff
for up to `retry_s`; training goes on meanwhile. Memory stays bounded: at most `max_pending`
metrics wait; beyond that the oldest waiting batches are set aside, never dropped: handed to
`set_aside` (the run's output folder: `spool.py`), and so is everything waiting once writes have
failed for `retry_s`. Batches submitted after that are tried again, the server may be back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)


class BackgroundWriter:
    def __init__(self, send, *, retry_s: float = 120.0, max_pending: int = 200_000, set_aside=None) -> None:
        """`send(batch)`: one write (e.g. MlflowClient.log_batch for one run), raising when it fails;
        `set_aside(batches)`: keeps what is not sent (default: in memory, returned by `close`)."""
        self.send, self.retry_s, self.max_pending = send, retry_s, max_pending
        self._keep = set_aside
        self.gave_up = False  # writes failed for retry_s at least once: some batches were set aside
        self._queue: deque[list] = deque()
        self._pending = 0
        self._set_aside: list[list] = []
        self._failed_since: float | None = None
        self._lock = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: list) -> None:
        """Queue `batch` (never blocks training)."""
        if not batch:
            return
        with self._lock:
            self._queue.append(batch)
            self._pending += len(batch)
            while self._pending > self.max_pending and len(self._queue) > 1:
                aside = self._queue[1]  # the head may be in flight: the next oldest goes aside
                del self._queue[1]
                self._put_aside([aside])
                self._pending -= len(aside)
            self._lock.notify()

    def _run(self) -> None:
        delay = 0.5
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if not self._queue:
                    return
                batch = self._queue[0]
            try:
                self.send(batch)
            except Exception as e:  # the server or its database away: retry, training goes on
                with self._lock:
                    now = time.monotonic()
                    self._failed_since = self._failed_since or now
                    if now - self._failed_since >= self.retry_s:
                        self._give_up_all()
                        self._failed_since = None
                        continue
                log.warning("MLflow write failed (%s); retrying in %.1f s", " ".join(str(e).split())[:200], delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            delay = 0.5
            with self._lock:
                self._failed_since = None
                if self._queue and self._queue[0] is batch:
                    self._queue.popleft()
                    self._pending -= len(batch)
                self._lock.notify_all()

    def _give_up_all(self) -> None:
        """Past `retry_s` of failures: everything waiting is set aside (kept, not sent)."""
        self.gave_up = True
        self._put_aside(list(self._queue))
        self._queue.clear()
        self._pending = 0
        self._lock.notify_all()

    def _put_aside(self, batches: list[list]) -> None:
        if self._keep is None:
            self._set_aside.extend(batches)
            return
        try:
            self._keep(batches)
        except Exception:  # a full disk: kept in memory, for close() to return
            log.exception("could not keep %d unsent MLflow batches", len(batches))
            self._set_aside.extend(batches)

    def close(self, timeout_s: float | None = None) -> list[list]:
        """Wait until everything is sent or `retry_s` of failures passed (or `timeout_s`); returns
        the batches not sent, oldest first."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout_s if timeout_s is not None else self.retry_s + 30)
        with self._lock:
            left = self._set_aside + list(self._queue)
            self._set_aside, self._pending = [], 0
            self._queue.clear()
        return left
