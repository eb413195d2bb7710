"""Helpers shared by the server tests: a gate that holds chosen sentences back, and a real uvicorn server on a free
loopback port running in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import uvicorn

WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gate:
    """Holds `tts.generate` calls whose text `matches` until `release()`: `entered` is set when one is held, and
    `held` counts the calls held so far."""

    def __init__(self, tts, matches: Callable[[str], bool] = lambda text: True):
        self.tts, self.matches = tts, matches
        self.entered, self.released = threading.Event(), threading.Event()
        self.finished = threading.Event()  # a held call has returned
        self.held = 0
        counting = threading.Lock()
        original = tts.generate

        def generate(text, *args, **kwargs):
            if not self.matches(text):
                return original(text, *args, **kwargs)
            with counting:
                self.held += 1
            self.entered.set()
            assert self.released.wait(WAIT_S), "the gate was never released"
            try:
                return original(text, *args, **kwargs)
            finally:
                self.finished.set()

        tts.generate = generate  # an instance attribute shadows the method

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        del self.tts.generate


@contextmanager
def gate(tts, matches: Callable[[str], bool] = lambda text: True) -> Iterator[Gate]:
    held = Gate(tts, matches)
    try:
        yield held
    finally:
        held.close()


def wait_until(condition: Callable[[], bool], explain: Callable[[], object], deadline: float) -> None:
    """Poll `condition` every 50 ms until it holds; fail with `explain()` once `time.monotonic()` passes `deadline`."""
    while not condition():
        assert time.monotonic() < deadline, explain()
        time.sleep(0.05)


@contextmanager
def running_server(app) -> Iterator[str]:
    """A real uvicorn server for `app` on a free loopback port, in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), lambda: "uvicorn did not start", time.monotonic() + WAIT_S)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
