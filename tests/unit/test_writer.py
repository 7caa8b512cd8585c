"""The background MLflow writer: training never waits on it, a failing server is retried until it
is back (nothing lost, nothing twice, in order), memory stays bounded, and what could not be sent
within `retry_s` is handed back, not dropped."""

from __future__ import annotations

import threading
import time

from mnist_pipeline.tracking.writer import BackgroundWriter


class FlakyServer:
    def __init__(self) -> None:
        self.up = threading.Event()
        self.up.set()
        self.received: list = []
        self.calls = 0

    def send(self, batch) -> None:
        self.calls += 1
        if not self.up.is_set():
            raise ConnectionError("Connection refused")
        time.sleep(0.001)
        self.received.extend(batch)


def test_a_server_away_for_a_while_loses_nothing_and_never_blocks_submit():
    server = FlakyServer()
    writer = BackgroundWriter(server.send, retry_s=30)
    writer.submit([0, 1])
    time.sleep(0.05)
    server.up.clear()
    started = time.monotonic()
    for step in range(2, 200):
        writer.submit([step])
    assert time.monotonic() - started < 0.5, "submit never waits for the server"
    time.sleep(1.5)
    assert server.calls > 2, "the failing write is retried"
    server.up.set()
    assert writer.close(timeout_s=30) == []
    assert server.received == list(range(200)), "every point once, in order"


def test_memory_is_bounded_and_what_is_set_aside_is_handed_back():
    server = FlakyServer()
    server.up.clear()
    writer = BackgroundWriter(server.send, retry_s=0.3, max_pending=10)
    for step in range(100):
        writer.submit([step])
    assert writer._pending <= 10
    left = writer.close(timeout_s=10)
    assert sorted(m for batch in left for m in batch) == list(range(100)), "nothing dropped"
    assert server.received == []


def test_what_is_set_aside_goes_to_the_keeper_at_once_and_later_batches_are_tried_again():
    server, kept = FlakyServer(), []
    server.up.clear()
    writer = BackgroundWriter(server.send, retry_s=0.3, max_pending=5, set_aside=kept.extend)
    for step in range(20):
        writer.submit([step])
    deadline = time.monotonic() + 10
    while not writer.gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.gave_up and sorted(m for batch in kept for m in batch) == list(range(20)), "kept, not in memory"
    server.up.set()
    writer.submit([20])  # the server is back: what comes next is sent
    assert writer.close(timeout_s=10) == []
    assert server.received == [20]
