"""Load test of `clvp-tts serve` on loopback: throughput and latency at N concurrent clients against one at a time.

A real server process (``python -m tortoise_clvp serve``, one worker per client at the highest concurrency) is
started on a free 127.0.0.1 port. Each phase sends ``--requests`` speech requests (``model`` tts-1, i.e. the
``ultra_fast_dpm`` preset: 16 candidates, 10 DPM-Solver++ steps, or the preset a model folder names: the bundled
model's ``ultra_fast_ddim``, 4 candidates, 4 DDIM steps; ``stream`` true, 16-bit PCM; texts cycled from a
fixed list; seed = request index) from C client threads in a closed loop (each sends its next request when the last
one is answered), for C in ``--concurrency``. Measured per phase: wall time from the first send to the last answer;
throughput in requests/s and seconds of audio per second; latency (send -> last byte) and time to first audio
(send -> first byte) at p50 / p95; the answers by status; the server's peak resident memory (VmHWM is per process
and only grows, so VmRSS is sampled every 50 ms). The batching gain is each phase's throughput over the
one-at-a-time phase's. One warm-up request precedes the phases.

Then an overload phase: a server with ``--workers 2 --max-queue 2`` gets ``--overload`` simultaneous requests;
every one must be answered (200) or refused cleanly (429 with Retry-After), none lost or failed.

Then the ceiling (``--ceiling``, on by default), in this process once the server is gone: what cross-request batching
can give on this machine at all. The server computes every stage in one thread (``ServeSettings.torch_threads``), so
one request at a time keeps about one core busy. Each stage's work per request is measured with one torch thread,
the server's way (the texts split as the stream splits them, the ``tts-1`` preset capped at ``--max-tokens``):
alone, request after request; and for the two stages the server shares across requests, the decoder
(`BatchedDecoder`) and the diffusion decoder (`BatchedDiffusion`), with the highest concurrency's requests at once
(their callers only wait, so the shared thread's wall time is the work). The bound is cores x (work alone) / (work
shared): the gain if every core were busy all the time and nothing but those two stages were saved.

Models (``--models``, each measured in turn): ``tiny``, the tests' seeded random tiny models (tests/conftest.py: a
2-layer 32-wide decoder over the released 8194-code vocabulary, so sampling, not the transformer, dominates its
decode steps); ``bundled-size``, seeded random models at the sizes the training recipe gives the bundled model
(``train.config.RecipeConfig``: a 6-layer 256-wide decoder over 1024 codes, CLVP 192 wide, diffusion 128 channels x
4 layers, the recipe's vocoder); or a model folder's path. Random models babble, so the server runs with
``--max-tokens`` (default 150 tokens, about 7 s of speech per candidate): the work per request is fixed, not speech.

Usage: python benchmarks/serve.py [--models tiny,bundled-size] [--concurrency 1,2,4,8] [--requests 16]
       [--max-tokens 150] [--overload 12] [--timeout 600] [--no-ceiling] [--out benchmarks/results/serve.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import REPO_ROOT, finish, format_table, load_average, result_header  # noqa: E402

TEXTS = (
    "Hello, this is a test.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "How are you today? Fine, thanks.",
)
SAMPLE_RATE = 24000
STARTUP_S = 300.0
RSS_EVERY_S = 0.05


def random_models(kind: str, folder: Path) -> Path:
    """Seeded random models as a native model folder: `tiny` (the tests' own) or `bundled-size` (the training
    recipe's sizes), with the tests' tokenizer and mel norms."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import conftest

    from tortoise_clvp.weights.native import PARTS, save_native

    assets = conftest.write_tiny_assets(folder / "assets", conftest.synth_speech(3.0, 22050, seed=7))
    if kind == "tiny":
        return save_native(folder / kind, conftest.tiny_parts(), assets)
    from tortoise_clvp.train.config import RecipeConfig

    recipe = RecipeConfig()
    codes = recipe.codes.model.codebook_size
    decoder = dataclasses.replace(recipe.autoregressive.model, number_mel_codes=codes + 2, calm_code=0, fix_tail=(0,) * 3,
                                  max_text_tokens=conftest.TINY_CONFIGS["autoregressive"].max_text_tokens,
                                  max_mel_tokens=500, dropout=0.0)
    configs = {
        "autoregressive": decoder,
        "clvp": dataclasses.replace(recipe.clvp.model, num_speech_tokens=codes),
        "diffusion": dataclasses.replace(recipe.diffusion.model, in_latent_channels=decoder.model_dim,
                                         in_tokens=decoder.number_mel_codes),
        "vocoder": recipe.vocoder.model,
    }
    torch.manual_seed(conftest.SEED)
    return save_native(folder / kind, {part: PARTS[part][1](config) for part, config in configs.items()}, assets)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server(models_dir: Path, workers: int, max_queue: int, max_tokens: int, cache: Path) -> Iterator[tuple[str, int]]:
    """A `clvp-tts serve` process on a free loopback port: yields (base URL, pid)."""
    port = free_port()
    command = [sys.executable, "-m", "tortoise_clvp", "serve", "--models-dir", str(models_dir), "--port", str(port),
               "--workers", str(workers), "--max-queue", str(max_queue), "--max-tokens", str(max_tokens),
               "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "TORTOISE_CLVP_CACHE": str(cache)})
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + STARTUP_S
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with status {process.returncode}")
            try:
                httpx.get(f"{base}/health", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not come up") from None
                time.sleep(0.2)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


class RssSampler:
    """Samples a process's resident memory (VmRSS, MB) in a thread; `peak_mb` is the highest seen."""

    def __init__(self, pid: int):
        self.path, self.peak_mb = Path(f"/proc/{pid}/status"), 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            try:
                line = next(l for l in self.path.read_text().splitlines() if l.startswith("VmRSS:"))
            except (OSError, StopIteration):
                continue
            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def speak(client: httpx.Client, index: int) -> dict[str, Any]:
    """One streamed request: status, seconds to the first and last byte, seconds of audio."""
    body = {"model": "tts-1", "input": TEXTS[index % len(TEXTS)], "voice": "piper_joe", "seed": index,
            "response_format": "pcm", "stream": True}
    start = time.perf_counter()
    first, size = None, 0
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        for part in response.iter_bytes():
            first = first if first is not None else time.perf_counter() - start
            size += len(part)
        status, retry_after = response.status_code, response.headers.get("retry-after")
    answer = {"status": status, "latency_s": time.perf_counter() - start, "audio_s": 0.0, "first_audio_s": None}
    if status == 200:
        answer.update(audio_s=size / 2 / SAMPLE_RATE, first_audio_s=first)
    elif status == 429:
        answer["retry_after"] = retry_after
    return answer


def phase(base: str, concurrency: int, requests: int, timeout: float, start_index: int) -> dict[str, Any]:
    """`requests` requests from `concurrency` closed-loop clients; the numbers of the phase."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(start_index, start_index + requests):
        todo.put(index)
    answers: list[dict[str, Any]] = []

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=timeout) as client:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    answers.append(speak(client, index))
                except httpx.HTTPError as error:
                    answers.append({"status": f"error: {type(error).__name__}", "latency_s": None, "audio_s": 0.0})

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ok = [a for a in answers if a["status"] == 200]
    latencies = sorted(a["latency_s"] for a in ok)
    firsts = sorted(a["first_audio_s"] for a in ok)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(_count(a["status"] for a in answers).items(), key=str)},
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "audio_s_per_s": sum(a["audio_s"] for a in ok) / wall,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "first_audio_p50_s": _percentile(firsts, 50),
        "first_audio_p95_s": _percentile(firsts, 95),
        "loadavg_1m_after": load_average(),
    }


def _count(values: Any) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _percentile(values: list[float], percent: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(percent) - 1]


def overload(models_dir: Path, cache: Path, count: int, max_tokens: int, timeout: float) -> dict[str, Any]:
    """`count` simultaneous requests to a server with 2 workers and a queue of 2: each answered or refused (429)."""
    with server(models_dir, 2, 2, max_tokens, cache) as (base, _pid):
        barrier, answers = threading.Barrier(count), []

        def one(index: int) -> None:
            with httpx.Client(base_url=base, timeout=timeout) as client:
                barrier.wait()
                try:
                    answers.append(speak(client, index))
                except httpx.HTTPError as error:
                    answers.append({"status": f"error: {type(error).__name__}"})

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = _count(a["status"] for a in answers)
    clean = set(statuses) <= {200, 429} and all(a.get("retry_after") for a in answers if a["status"] == 429)
    return {"requests": count, "statuses": {str(k): v for k, v in statuses.items()}, "all_answered_or_refused": clean}


def measure(models_dir: Path, levels: list[int], args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Every concurrency level on one server, then the overload phase; the numbers."""
    phases = []
    with server(models_dir, max(levels), max(levels), args.max_tokens, cache) as (base, pid):
        with httpx.Client(base_url=base, timeout=args.timeout) as client:
            speak(client, 0)  # warm-up
        start = 1
        for level in levels:
            with RssSampler(pid) as rss:
                numbers = phase(base, level, args.requests, args.timeout, start)
            numbers["server_peak_rss_mb"] = rss.peak_mb
            start += args.requests
            phases.append(numbers)
            print(f"  {level} client(s): {numbers['requests_per_s']:.3f} requests/s", flush=True)
    alone = phases[0]["requests_per_s"]
    for numbers in phases:
        numbers["gain_vs_one_at_a_time"] = numbers["requests_per_s"] / alone if alone else None
    return {"phases": phases, "overload": overload(models_dir, cache, args.overload, args.max_tokens, args.timeout)}


def ceiling(models_dir: Path, clients: int, max_tokens: int) -> dict[str, Any]:
    """Seconds of work per request by stage, one torch thread: alone, and shared by `clients` requests at once for
    the decoder and the diffusion decoder; the bound on the batching gain they allow (see the module docstring)."""
    from tortoise_clvp.api import TextToSpeech
    from tortoise_clvp.longform import STREAMING_FIRST_CHUNK, chunk_texts
    from tortoise_clvp.pipeline.batched_decoding import BatchedDecoder
    from tortoise_clvp.pipeline.batched_diffusion import BatchedDiffusion
    from tortoise_clvp.presets import preset
    from tortoise_clvp.serve.scheduler import fit_token_budget
    from tortoise_clvp.serve.settings import QUICK_OPENAI_MODEL, ServeSettings
    from tortoise_clvp.voices import resolve_voice

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tts = TextToSpeech.from_local(models_dir)
        settings = ServeSettings(max_tokens=max_tokens).for_model(tts.models.default_preset)  # as the server's
        options = fit_token_budget(preset(settings.preset_for(QUICK_OPENAI_MODEL)), tts, settings.max_tokens)
        conditioning = tts.get_conditioning(resolve_voice("piper_joe").clips)
        sentences = [chunk for index in range(clients)
                     for chunk in chunk_texts(TEXTS[index % len(TEXTS)], first_chunk_length=STREAMING_FIRST_CHUNK)]
        alone: dict[str, float] = {}
        made = []
        tts.generate(sentences[0], conditioning, options, seed=0)  # warm-up
        for seed, sentence in enumerate(sentences):
            speech = tts.generate(sentence, conditioning, options, seed=seed)
            made.append(speech)
            for stage, seconds in speech.timings.items():
                alone[stage] = alone.get(stage, 0.0) + seconds / clients

        def together(call) -> float:
            workers = [threading.Thread(target=call, args=(seed,)) for seed in range(len(sentences))]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            return (time.perf_counter() - start) / clients

        model = tts.models.autoregressive
        decoder = BatchedDecoder(model, threads=1)
        diffusion = BatchedDiffusion(tts.models.diffusion, threads=1)
        try:
            ids = [tts.tokenize(sentence) for sentence in sentences]
            shared = {
                "sampling": together(lambda seed: decoder.sample_candidates(
                    model, conditioning.autoregressive, ids[seed], options.decoding,
                    torch.Generator().manual_seed(seed))),
                "diffusion": together(lambda seed: diffusion.latents_to_mel(
                    tts.models.diffusion, made[seed].candidates.latents[0], conditioning.diffusion, options.diffusion,
                    torch.Generator().manual_seed(seed))),
            }
        finally:
            decoder.close(5)
            diffusion.close(5)
    finally:
        torch.set_num_threads(threads)
    work_alone = sum(alone.values())
    work_shared = work_alone - sum(alone[stage] - seconds for stage, seconds in shared.items())
    cores = os.cpu_count() or 1
    return {"clients": clients, "sentences": len(sentences), "cores": cores, "alone_s": alone,
            "shared_s": shared, "work_alone_s": work_alone, "work_shared_s": work_shared,
            "gain_bound": cores * work_alone / work_shared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,bundled-size", help="tiny, bundled-size or model folders, comma-separated")
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts, comma-separated; 1 is always measured")
    parser.add_argument("--requests", type=int, default=16, help="requests per phase")
    parser.add_argument("--max-tokens", type=int, default=150, help="speech tokens per candidate (the server's cap)")
    parser.add_argument("--overload", type=int, default=12, help="simultaneous requests in the overload phase")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a client waits for one answer")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                        help="skip the in-process measurement of the batching gain's bound")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()
    levels = sorted({1, *(int(c) for c in args.concurrency.split(","))})

    result = result_header("serve", args, __doc__.split("\n\n")[1])
    result["models"] = {}
    headers = ["model", "clients", "answers", "wall s", "req/s", "audio s/s", "gain", "p50 s", "p95 s", "first p50 s",
               "first p95 s", "peak RSS MB"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        folder = Path(scratch)
        for name in args.models.split(","):
            print(f"{name}:", flush=True)
            models_dir = random_models(name, folder) if name in ("tiny", "bundled-size") else Path(name)
            numbers = result["models"][name] = measure(models_dir, levels, args, folder / "cache")
            if args.ceiling:
                numbers["ceiling"] = ceiling(models_dir, max(levels), args.max_tokens)
            rows += [[name, p["concurrency"], " ".join(f"{k}:{v}" for k, v in p["statuses"].items()), p["wall_s"],
                      p["requests_per_s"], p["audio_s_per_s"], p["gain_vs_one_at_a_time"], p["latency_p50_s"],
                      p["latency_p95_s"], p["first_audio_p50_s"], p["first_audio_p95_s"], p["server_peak_rss_mb"]]
                     for p in numbers["phases"]]
    print()
    print(format_table(headers, rows))
    for name, numbers in result["models"].items():
        over = numbers["overload"]
        print(f"{name} overload: {over['requests']} at once to 2 workers + queue 2 -> {over['statuses']} "
              f"(all answered or refused cleanly: {over['all_answered_or_refused']})")
    bounds = [[name, c["clients"], c["alone_s"]["sampling"], c["shared_s"]["sampling"], c["alone_s"]["diffusion"],
               c["shared_s"]["diffusion"], c["work_alone_s"] - c["alone_s"]["sampling"] - c["alone_s"]["diffusion"],
               c["work_alone_s"], c["work_shared_s"], c["gain_bound"]]
              for name, numbers in result["models"].items() if (c := numbers.get("ceiling"))]
    if bounds:
        print("\nwork per request, one thread, seconds (shared: with the other clients' requests at once)")
        print(format_table(["model", "clients", "decode alone", "decode shared", "diffusion alone", "diffusion shared",
                            "other stages", "work alone", "work shared", "gain bound"], bounds, digits=3))
    result["loadavg_1m_at_end"] = load_average()
    finish(args.out, result)


if __name__ == "__main__":
    main()
