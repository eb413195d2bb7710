"""What ``compile=True`` buys on CPU: the decoder's per-token step and the diffusion denoiser, eager against compiled.

Full-size random-weight models (``*.RELEASED`` configs, built under ``torch.manual_seed``), float32:
- decoder: ``--rows`` candidates, a ``--prompt``-position prompt prefilled once, then ``--steps`` timed
  ``decode_step`` calls at growing cache positions, per variant: ``packed`` (eager with oneDNN-packed linears, what
  ``TextToSpeech.from_local`` runs on CPU float32) and ``compiled`` (``compile_decode_step`` on plain linears: inductor
  cannot take pre-packed weights);
- denoiser: one guided step (batch 2, 100 latents -> 435 frames), ``eager`` against ``compile_forward``.
Each compiled variant's first call (the compile) is timed on its own; steady-state times are medians after it.
Outputs are compared (max |diff|) so a speed-up never hides a different result.

Usage: python benchmarks/compile_cpu.py [--rows 16] [--prompt 45] [--steps 20] [--repeats 3] [--threads 2]
       [--out benchmarks/results/compile_cpu.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import finish, format_table, load_average, result_header, time_runs, timed  # noqa: E402

from tortoise_clvp.config import AutoregressiveConfig, DiffusionConfig  # noqa: E402
from tortoise_clvp.models.autoregressive import AutoregressiveModel  # noqa: E402
from tortoise_clvp.models.diffusion import DiffusionModel, output_frames  # noqa: E402
from tortoise_clvp.models.packed_linear import pack_linears  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "compile_cpu.json"
LATENTS = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16, help="candidates decoded together")
    parser.add_argument("--prompt", type=int, default=45, help="prompt positions prefilled before decoding")
    parser.add_argument("--steps", type=int, default=20, help="timed decode steps per variant")
    parser.add_argument("--repeats", type=int, default=3, help="timed denoiser steps per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if min(args.rows, args.prompt, args.steps, args.repeats, args.threads) < 1:
        parser.error("every count must be >= 1")
    return args


def decoder_variant(model: AutoregressiveModel, args: argparse.Namespace) -> dict[str, Any]:
    """Prefill, then the first step (the compile, if any) and `steps` timed steps -> times and the last logits."""
    prompt = torch.randn(1, args.prompt, model.config.model_dim, generator=torch.Generator().manual_seed(args.seed))
    tokens = torch.arange(args.rows) * 7 % 8192
    model.setup_cache(args.rows, args.prompt + args.steps + 1)
    model.prefill(prompt)
    first_s, _ = timed(lambda: model.decode_step(tokens, 1, args.prompt))
    times, logits = [], None
    for step in range(1, args.steps + 1):
        seconds, logits = timed(lambda: model.decode_step(tokens, step + 1, args.prompt + step))
        times.append(seconds)
    model.release_cache()
    return {"first_call_s": first_s, "median_step_s": statistics.median(times), "times_s": times, "logits": logits}


def denoiser_variant(model: DiffusionModel, step: Callable[[], Tensor], repeats: int) -> dict[str, Any]:
    first_s, out = timed(step)
    runs = time_runs(step, repeats, warmup=lambda: None)
    return {"first_call_s": first_s, "median_step_s": runs.median_s, "times_s": runs.times_s, "out": out}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = result_header("compile_cpu", args, __doc__.split("\n\n")[1])
    rows: list[list[Any]] = []
    with torch.inference_mode():
        print(f"decoder: {args.rows} rows, {args.prompt}-position prompt, {args.steps} steps ...", flush=True)
        decoder = {}
        for name in ("packed", "compiled"):
            torch.manual_seed(args.seed)
            model = AutoregressiveModel(AutoregressiveConfig.RELEASED).eval().requires_grad_(False)
            if name == "packed":
                pack_linears(model)
            else:
                model.compile_decode_step()
            decoder[name] = decoder_variant(model, args)
            del model
        decoder_diff = (decoder["compiled"].pop("logits") - decoder["packed"].pop("logits")).abs().max().item()

        print("denoiser: one guided step, batch 2 ...", flush=True)
        torch.manual_seed(args.seed)
        diffusion = DiffusionModel(DiffusionConfig.RELEASED).eval().requires_grad_(False)
        frames = output_frames(LATENTS)
        generator = torch.Generator().manual_seed(args.seed + 1)
        x = torch.randn(2, diffusion.config.in_channels, frames, generator=generator)
        embeddings = torch.randn(2, diffusion.config.model_channels, frames, generator=generator)
        t = torch.tensor([2000, 2000])
        denoiser = {"eager": denoiser_variant(diffusion, lambda: diffusion(x, t, embeddings), args.repeats)}
        diffusion.compile_forward()
        denoiser["compiled"] = denoiser_variant(diffusion, lambda: diffusion(x, t, embeddings), args.repeats)
        denoiser_diff = (denoiser["compiled"].pop("out") - denoiser["eager"].pop("out")).abs().max().item()

    result["decoder"] = {**decoder, "max_abs_logit_diff": decoder_diff,
                         "compiled_over_packed": decoder["compiled"]["median_step_s"] / decoder["packed"]["median_step_s"]}
    result["denoiser"] = {**denoiser, "max_abs_diff": denoiser_diff,
                          "compiled_over_eager": denoiser["compiled"]["median_step_s"] / denoiser["eager"]["median_step_s"]}
    result["system"]["loadavg_1m_at_end"] = load_average()
    for stage, variants in (("decoder step", decoder), ("denoiser step", denoiser)):
        for name, entry in variants.items():
            rows.append([stage, name, entry["median_step_s"] * 1e3, entry["first_call_s"]])
    print(f"\nCPU fp32, {args.threads} thread(s), full-size random weights (load "
          f"{result['system']['loadavg_1m_at_start'] or 0:.2f} at start):")
    print(format_table(["what", "variant", "median ms per step", "first call s (compile)"], rows, digits=1))
    print(f"compiled / packed decoder step: {result['decoder']['compiled_over_packed']:.2f}x the time "
          f"(logits max |diff| {decoder_diff:.1e}); compiled / eager denoiser step: "
          f"{result['denoiser']['compiled_over_eager']:.2f}x (max |diff| {denoiser_diff:.1e})")
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
