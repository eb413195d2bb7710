"""The server through real uvicorn on a free loopback port: `clvp-tts serve` as a process answering concurrent
requests with the audio each gets alone; streaming that sends the first sentence before the last is made; a client
that disconnects cancels its work."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import REPO_ROOT
from serve_helpers import WAIT_S, free_port, gate, running_server, wait_until

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.serve.app import create_app
from tortoise_clvp.serve.settings import ServeSettings

SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "piper_joe", "candidates": 2, "response_format": "pcm"}
FIRST = "The quick brown fox jumps over the lazy dog, then runs far away into the green forest behind the farm."
LONG = (f"{FIRST} She sells sea shells by the sea shore, and the shells she sells are surely sea shells from the bay. "
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.")
LAST = "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow."
STARTUP_S = 180.0  # a fresh process imports torch and loads the models (seconds; more on a busy machine)


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture
def app(tts, tmp_path):
    return create_app(tts, ServeSettings(workers=2, max_queue=2, cache_dir=tmp_path / "latents"))


def test_a_serve_process_answers_concurrent_requests_as_it_answers_each_alone(tiny_model_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "TORTOISE_CLVP_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "tortoise_clvp", "serve", "--models-dir", str(tiny_model_dir), "--port", str(port),
               "--workers", "3", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                health = httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert health.json()["model"] == tiny_model_dir.name
        bodies = [{**SPEECH, "seed": seed, "input": text}
                  for seed, text in ((1, "Hello there."), (2, "How are you today?"), (3, FIRST))]
        with httpx.Client(base_url=base, timeout=WAIT_S) as client:
            with ThreadPoolExecutor(len(bodies)) as pool:
                together = list(pool.map(lambda body: client.post("/v1/audio/speech", json=body), bodies))
            alone = [client.post("/v1/audio/speech", json=body) for body in bodies]
            assert [r.status_code for r in together + alone] == [200] * 6
            for shared, single in zip(together, alone):
                assert shared.content == single.content and len(shared.content) > 0
            assert [r.headers["x-seed"] for r in together] == ["1", "2", "3"]
            assert "<textarea" in client.get("/").text
            metrics = client.get("/metrics").text
            assert 'clvp_requests_total{outcome="ok"} 6' in metrics
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(WAIT_S)
        finally:
            server.kill()
    assert server.returncode == 0


def test_streaming_sends_the_first_chunk_before_the_last_sentence_is_made(app):
    scheduler = app.state.scheduler
    with gate(scheduler.tts, lambda text: text == LAST) as held, running_server(app) as base:
        with httpx.stream("POST", f"{base}/v1/audio/speech", json={**SPEECH, "input": LONG, "stream": True},
                          timeout=WAIT_S) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            first = next(chunks)
            assert len(first) > 0
            assert held.entered.wait(WAIT_S)  # the worker reaches the last sentence (after sending the first)...
            assert not held.finished.is_set()  # ...which is held back: the first chunk came before the last was made
            held.release()
            streamed = first + b"".join(chunks)
        assert held.finished.is_set()
        again = httpx.post(f"{base}/v1/audio/speech", timeout=WAIT_S,
                           json={**SPEECH, "input": LONG, "stream": True, "seed": int(response.headers["x-seed"])})
    assert streamed == again.content  # the seed it reported gives the same stream again


def _send_and_hang_up(base: str, body: dict, after: threading.Event, read_first: bool) -> None:
    """Send a speech request over a raw socket, wait for `after` (or the first bytes), then close the connection."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as connection:
        connection.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        if read_first:
            assert connection.recv(1024).startswith(b"HTTP/1.1 200")
        assert after.wait(WAIT_S)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_client_that_hangs_up_cancels_its_work(app, stream):
    scheduler = app.state.scheduler
    matches = (lambda text: text == LAST) if stream else (lambda text: True)
    with gate(scheduler.tts, matches) as held, running_server(app) as base:
        _send_and_hang_up(base, {**SPEECH, "input": LONG, "stream": stream}, held.entered, read_first=stream)
        time.sleep(0.5)  # the server notices the hang-up (it polls every 0.25 s; a stream's send fails)
        held.release()
        deadline = time.monotonic() + WAIT_S
        wait_until(lambda: scheduler.requests.value("cancelled") >= 1, scheduler.render_metrics, deadline)
        assert scheduler.requests.value("ok") == 0
        # the decoder thread retires the rows at its next iteration
        wait_until(lambda: scheduler.decoder.stats().active_rows == 0, scheduler.decoder.stats, deadline)
