"""One conditioning-free diffusion step on CPU: the original's two batch-1 forwards against our one batch-2 forward.

A full-size random-weight `DiffusionModel` (``DiffusionConfig.RELEASED``, built under ``torch.manual_seed``) turns 100
random autoregressive latents into 435 mel frames (``output_frames(100)``, about 4.6 s of audio). A guided
(conditioning-free) step needs the network's output for the conditioned AND the unconditioned embeddings:
- ``two_batch1`` (the original's way, ``SpacedDiffusion.p_mean_variance``): ``forward(x, t, embeddings)`` then
  ``forward(x, t, unconditioned_embeddings)``, each batch 1 (each forward is also timed on its own: the
  conditioned one alone is a step without guidance, what the ``ultra_fast`` preset runs);
- ``batch2`` (ours, ``spectrogram.latents_to_mel``): one ``forward(cat([x, x]), cat([t, t]),
  with_unconditioned(embeddings))``.
Both give the same numbers (checked: max |diff| printed). Each variant gets one warm-up call, then the variants
alternate (A B, B A, ...) for ``--repeats`` rounds under ``torch.inference_mode``; the median is quoted. The one-off
``timestep_independent`` cost (latents -> the aligned embeddings reused at every step) is timed the same way.

The original's figures on the reference machine (same 2-core CPU class, 2 threads, shared ``timings_cpu2.json``):
2.28 s for the two batch-1 forwards, 1.64 s batched; the target for ours is <= 1.5 s per guided step. The machine is
shared: the 1-minute load average is recorded before and after, and only ratios from one run should be quoted.

Usage: python benchmarks/diffusion_step.py [--latents 100] [--repeats 5] [--threads 2] [--seed 0] [--timestep 2000]
       [--out benchmarks/results/diffusion_step.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import (  # noqa: E402
    Runs,
    current_rss_mb,
    finish,
    format_table,
    load_average,
    load_reference,
    load_span,
    peak_rss_mb,
    result_header,
    time_runs,
    timed,
)

from tortoise_clvp.config import DiffusionConfig  # noqa: E402
from tortoise_clvp.models.diffusion import DiffusionModel, output_frames  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "diffusion_step.json"
TARGET_S = 1.5  # per guided step, 435 frames, 2 threads
ORIGINAL_TWO_BATCH1_S = 2.28  # the shared reference's figures, quoted when the file is absent
ORIGINAL_BATCH2_S = 1.64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latents", type=int, default=100, help="autoregressive latents (100 -> 435 mel frames)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each variant once per round)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timestep", type=int, default=2000, help="the original timestep (0..3999) fed to forward")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.latents < 1 or args.repeats < 1 or not 0 <= args.timestep < 4000:
        parser.error("need --latents >= 1, --repeats >= 1 and 0 <= --timestep < 4000")
    return args


def build_model(seed: int) -> DiffusionModel:
    torch.manual_seed(seed)
    return DiffusionModel(DiffusionConfig.RELEASED).eval().requires_grad_(False)


def reference_context() -> dict[str, Any]:
    """The original's diffusion-step figures from timings_cpu2.json (or the brief's numbers if the file is absent)."""
    data = load_reference("timings_cpu2.json")
    entry = (data or {}).get("original", {}).get("diffusion")
    if not entry:
        return {"path": None, "median_s": ORIGINAL_TWO_BATCH1_S, "batch2_median_s": ORIGINAL_BATCH2_S}
    keep = ("threads", "latent_tokens", "output_frames", "timestep_independent_s", "how", "times_s", "median_s",
            "batch2_times_s", "batch2_median_s", "n_params", "peak_rss_mb")
    return {"path": data["path"], "machine": data.get("machine"), **{k: entry[k] for k in keep if k in entry}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        **result_header("diffusion_step", args, __doc__.split("\n\n")[1]),
        "reference_original": reference_context(),
    }

    print(f"building the full-size diffusion decoder (seed {args.seed}) ...", flush=True)
    start = time.perf_counter()
    model = build_model(args.seed)
    config = model.config
    frames = output_frames(args.latents)
    result["setup"] = {"build_s": time.perf_counter() - start, "n_params": sum(p.numel() for p in model.parameters()),
                       "latents": args.latents, "frames": frames, "model_channels": config.model_channels,
                       "num_layers": config.num_layers}

    generator = torch.Generator().manual_seed(args.seed + 1)
    latents = torch.randn(1, args.latents, config.in_latent_channels, generator=generator)
    cond_latent = torch.randn(1, 2 * config.model_channels, generator=generator)
    x = torch.randn(1, config.in_channels, frames, generator=generator)
    t = torch.tensor([args.timestep])

    with torch.inference_mode():
        print(f"timestep_independent: {args.latents} latents -> {frames} frames ...", flush=True)
        ti_runs = time_runs(lambda: model.timestep_independent(latents, cond_latent, frames), args.repeats)
        embeddings = model.timestep_independent(latents, cond_latent, frames)  # (1, C, frames)
        unconditioned = model.unconditioned_embeddings(1, frames)  # (1, C, frames)
        both = model.with_unconditioned(embeddings)  # (2, C, frames)
        x2, t2 = torch.cat([x, x]), torch.cat([t, t])

        variants: dict[str, Callable[[], Tensor]] = {
            "cond_batch1": lambda: model(x, t, embeddings),
            "uncond_batch1": lambda: model(x, t, unconditioned),
            "batch2": lambda: model(x2, t2, both),
        }
        print("warm-up and equality check ...", flush=True)
        outputs = {name: run() for name, run in variants.items()}  # also the warm-up
        max_diff = max(
            (outputs["batch2"][0] - outputs["cond_batch1"][0]).abs().max().item(),
            (outputs["batch2"][1] - outputs["uncond_batch1"][0]).abs().max().item(),
        )
        finite = all(bool(torch.isfinite(out).all()) for out in outputs.values())
        del outputs

        print(f"{args.repeats} interleaved rounds: original two batch-1 forwards vs one batch-2 forward ...", flush=True)
        runs = {"two_batch1": Runs(), "cond_batch1": Runs(), "uncond_batch1": Runs(), "batch2": Runs()}
        round_loads: list[float | None] = []
        for repeat in range(args.repeats):
            order = ["two_batch1", "batch2"] if repeat % 2 == 0 else ["batch2", "two_batch1"]  # ABBA
            for name in order:
                if name == "batch2":
                    runs["batch2"].add(timed(variants["batch2"])[0])
                else:
                    first, _ = timed(variants["cond_batch1"])
                    second, _ = timed(variants["uncond_batch1"])
                    runs["cond_batch1"].add(first)
                    runs["uncond_batch1"].add(second)
                    runs["two_batch1"].add(first + second)
            round_loads.append(load_average())
            print(f"  round {repeat + 1}: two batch-1 {runs['two_batch1'].times_s[-1]:.3f} s, "
                  f"batch-2 {runs['batch2'].times_s[-1]:.3f} s  (load {load_average() or 0:.2f})", flush=True)

    reference = result["reference_original"]
    ours = {name: r.as_dict() for name, r in runs.items()}
    ratio = runs["two_batch1"].median_s / runs["batch2"].median_s
    result["ours"] = {
        **ours,
        "timestep_independent": ti_runs.as_dict(),
        "loadavg_1m_after_each_round": round_loads,
        "speedup_batch2_over_two_batch1": ratio,
        "batch2_vs_cond_batch1": runs["batch2"].median_s / runs["cond_batch1"].median_s,
        "max_abs_diff_batch2_vs_batch1": max_diff,
        "outputs_finite": finite,
        "target_s": TARGET_S,
        "meets_target": runs["batch2"].median_s <= TARGET_S,
    }
    result["vs_original"] = {
        "original_two_batch1_over_ours_batch2": reference["median_s"] / runs["batch2"].median_s,
        "original_batch2_over_ours_batch2": reference["batch2_median_s"] / runs["batch2"].median_s,
        "original_ratio_two_batch1_over_batch2": reference["median_s"] / reference["batch2_median_s"],
        "note": "the original's figures were taken on the reference machine at another time: compare loosely",
    }
    result["memory"] = {"peak_rss_mb": peak_rss_mb(), "current_rss_mb": current_rss_mb()}
    result["system"]["loadavg_1m_at_end"] = load_average()

    rows = [
        ["ours: two batch-1 forwards (original way)", runs["two_batch1"].median_s, min(runs["two_batch1"].times_s),
         " ".join(f"{v:.3f}" for v in runs["two_batch1"].times_s)],
        ["  of which conditioned (= unguided step)", runs["cond_batch1"].median_s, min(runs["cond_batch1"].times_s),
         " ".join(f"{v:.3f}" for v in runs["cond_batch1"].times_s)],
        ["  of which unconditioned", runs["uncond_batch1"].median_s, min(runs["uncond_batch1"].times_s),
         " ".join(f"{v:.3f}" for v in runs["uncond_batch1"].times_s)],
        ["ours: one batch-2 forward (latents_to_mel)", runs["batch2"].median_s, min(runs["batch2"].times_s),
         " ".join(f"{v:.3f}" for v in runs["batch2"].times_s)],
        ["ours: timestep_independent (once)", ti_runs.median_s, min(ti_runs.times_s),
         " ".join(f"{v:.3f}" for v in ti_runs.times_s)],
        ["original: two batch-1 forwards", reference["median_s"], None,
         " ".join(f"{v:.3f}" for v in reference.get("times_s", []))],
        ["original: one batch-2 forward", reference["batch2_median_s"], None,
         " ".join(f"{v:.3f}" for v in reference.get("batch2_times_s", []))],
    ]
    if "timestep_independent_s" in reference:
        rows.append(["original: timestep_independent (once)", reference["timestep_independent_s"], None, ""])
    load = load_span(result["system"])
    print(f"\nOne conditioning-free diffusion step, full-size random weights ({result['setup']['n_params'] / 1e6:.0f} M "
          f"params), {args.latents} latents -> {frames} frames, CPU fp32, {args.threads} thread(s), median of "
          f"{args.repeats} interleaved rounds after a warm-up (1-min load average {load}; "
          f"{result['system']['cpu_count']} cores)")
    print(format_table(["what", "median s", "min s", "runs (s)"], rows, digits=3))
    print(f"\nours, same run: two batch-1 / batch-2 = {ratio:.2f}x  (original on the reference machine: "
          f"{result['vs_original']['original_ratio_two_batch1_over_batch2']:.2f}x); batch-2 vs one batch-1 forward: "
          f"{result['ours']['batch2_vs_cond_batch1']:.2f}x the time")
    print(f"batch-2 vs batch-1 outputs: max |diff| {max_diff:.2e}; outputs finite: {finite}")
    print(f"target: one guided step <= {TARGET_S:.2f} s -> ours {runs['batch2'].median_s:.3f} s: "
          f"{'met' if result['ours']['meets_target'] else 'NOT met'}")
    print(f"peak RSS {result['memory']['peak_rss_mb']:.0f} MiB (whole process, model build included)")
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
