"""Diffusion sampler accuracy, measured: DDIM and DPM-Solver++(2M) at few steps against the p-sampler at many.

Two denoisers, each sampled from ONE fixed initial noise (seed ``--noise-seed``) shared by every run:
- ``tiny``: the TINY diffusion decoder of the shared reference (``models/diffusion_tiny``: 64 channels, 2 layers,
  4 heads, random but non-degenerate weights) on the original pipeline's trimmed latents of candidate 0
  (``pipeline_tiny`` ``s7.cand0.trimmed_latents``, 64 latents -> 278 frames) and voice latent (``s2.diffusion_latent``),
  with the denoiser ``latents_to_mel`` builds (one batch-2 forward per guided step);
- ``oracle``: the exact denoiser of a known data distribution, x0 ~ N(mu, s^2) per mel bin and frame, mu = a real
  speech mel (``audio_cases`` ``speech_a`` diffusion conditioning mel, normalised, first 278 frames, clipped to
  +-0.9), s = ``--oracle-std`` (normalised units); its eps and learned-range variance are the true ones for each step
  of each schedule (a perfectly trained model of that toy data); guidance mixes in an "unconditioned" Gaussian
  (mu's per-band time mean, std 0.3).
Each run is ``diffusion_sampler.sample(denoiser, shape, SamplerOptions(sampler, steps, cond_free), noise=that_noise)``,
denormalised to a log-mel as the vocoder gets it.

References:
- ``p@200`` and ``p@400``: the original ancestral sampler (what Tortoise runs; its standard / high_quality step counts).
  It draws fresh noise at every step, so its answer is itself random even from a fixed start: it runs with per-step
  generator seeds ``--p-seeds`` (3 by default), and the RMSE between those runs (same start, other per-step noise) is
  the p-sampler's own seed-to-seed spread, the NOISE FLOOR: no sampler can be "closer to the p-sampler" than another
  p-sampler run is. Errors against p are averaged over its seeds.
- ``ddim@400`` and ``dpm@400``: deterministic, converged answers of the probability-flow ODE from the same start;
  the error of a few-step ODE solver against them is its pure discretisation error.
Errors are RMSE and max |diff| over the (100, frames) log-mel in natural-log units of magnitude (1 unit = 8.7 dB; the
mel spans TACOTRON_MEL_MIN..MAX = -11.5..2.3), with guidance (cond_free, k = 2, as the guided presets) and without.

Choice: per denoiser and guidance setting, the smallest measured DPM-Solver++ step count whose mean RMSE against the
p@200 runs is within the p@200 seed-to-seed spread (else the closest one); beside it, the smallest count whose
discretisation error (RMSE against dpm@400) is at most ``--ode-tol`` (0.1 = 0.9 dB), and the same over a sweep of
oracle variants (data std ``--sweep-std`` x unconditioned std ``--sweep-uncond-std``), worst case. The speed-up over
the original presets' step counts (ultra_fast 30, fast 80, standard 200) is the ratio of steps, each step being one
(batched) forward. The ``ultra_fast`` preset runs WITHOUT guidance (batch-1 forwards) while ``ultra_fast_dpm`` runs
with it (batch 2): where ``benchmarks/results/diffusion_step.json`` exists its measured batch-2 / batch-1 forward
time corrects that ratio. The p-spread criterion is weak: an ODE answer from the same start lies about 1/sqrt(2) of
the p-sampler's seed-to-seed spread from a p run even with a sizable discretisation error of its own, so it passes
early; the discretisation-error criterion is the stricter one.

What these can tell: whether the samplers converge to the same answer, how fast their discretisation error falls with
steps, and how that compares with the p-sampler's randomness, for the real architecture with random weights (tiny)
and for a well-behaved, exactly known score field (oracle). What they cannot: perceived audio quality, or the error
curve of the TRAINED 1024-channel model. The random tiny network's epsilon barely depends on its input, so its x0
predictions sit clamped at +-1 (the "x0 clamped" column) and its p-sampler output is mostly the sampler's own
noise (seed-to-seed spread as large as the mel itself): its p-referenced errors say little. The oracle's data are
Gaussian around one mel, much simpler than speech. Treat the chosen step count as a lower bound to confirm by
listening with real weights.

Usage: python benchmarks/diffusion_samplers.py [--dpm-steps 5,10,15,20,30,50] [--ddim-steps 10,20,30,50]
       [--p-steps 30,80] [--p-seeds 0,1,2] [--noise-seed 1234] [--candidate 0] [--denoisers tiny,oracle]
       [--oracle-std 0.1] [--ode-tol 0.1] [--sweep-std 0.05,0.1,0.2] [--sweep-uncond-std 0.15,0.3,0.6]
       [--threads 2] [--out benchmarks/results/diffusion_samplers.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import (  # noqa: E402
    finish,
    format_table,
    load_average,
    load_span,
    peak_rss_mb,
    reference_dir,
    result_header,
    write_json_atomic,
)
from safetensors.torch import load_file  # noqa: E402

from tortoise_clvp.frontend.mel import denormalize_tacotron_mel, normalize_tacotron_mel  # noqa: E402
from tortoise_clvp.models.diffusion import output_frames  # noqa: E402
from tortoise_clvp.pipeline.samplers import (  # noqa: E402
    TRAINED_DIFFUSION_STEPS,
    SamplerOptions,
    linear_betas,
    sample,
    sampler_schedule,
    stacked_denoiser,
)
from tortoise_clvp.presets import PRESETS  # noqa: E402
from tortoise_clvp.weights.original_diffusion import (  # noqa: E402
    diffusion_config_from_original_kwargs,
    load_diffusion_original,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "diffusion_samplers.json"
STEP_RESULT = Path(__file__).resolve().parent / "results" / "diffusion_step.json"
REFERENCE_STEPS = (200, 400)
ORIGINAL_PRESET_STEPS = {"ultra_fast": 30, "fast": 80, "standard": 200}  # tts_with_preset's diffusion_iterations
ORIGINAL_PRESET_GUIDED = {"ultra_fast": False, "fast": True, "standard": True}  # cond_free
SATURATED = 0.999  # |normalised mel| at or above this counts as clamped to the [-1, 1] edge
ORACLE_MEL = "speech_a_22k_mono_s16.diffusion_cond_mel"
ORACLE_MU_CLIP = 0.9  # headroom below the x0 clamp at +-1
ORACLE_UNCOND_STD = 0.3
UNINFORMATIVE = 0.05  # DPM errors vs p that differ by less than this fraction of the floor cannot rank step counts


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dpm-steps", type=int_list, default=int_list("5,10,15,20,30,50"))
    parser.add_argument("--ddim-steps", type=int_list, default=int_list("10,20,30,50"))
    parser.add_argument("--p-steps", type=int_list, default=int_list("30,80"),
                        help="extra p-sampler step counts to compare (the original presets'), first p-seed")
    parser.add_argument("--p-seeds", type=int_list, default=int_list("0,1,2"),
                        help="per-step noise seeds of the p-sampler references (>= 2 for a noise floor)")
    parser.add_argument("--noise-seed", type=int, default=1234, help="seed of the ONE initial noise every run starts from")
    parser.add_argument("--candidate", type=int, default=0, help="pipeline_tiny candidate whose latents are decoded")
    parser.add_argument("--denoisers", default="tiny,oracle", help="'tiny', 'oracle' or both")
    parser.add_argument("--guidance", default="on,off", help="'on', 'off' or 'on,off' (conditioning-free guidance)")
    parser.add_argument("--oracle-std", type=float, default=0.1, help="std of the oracle's Gaussian data (normalised)")
    parser.add_argument("--ode-tol", type=float, default=0.1, help="log-mel RMSE vs dpm@400 deemed converged")
    parser.add_argument("--sweep-std", type=float_list, default=float_list("0.05,0.1,0.2"),
                        help="oracle data stds of the robustness sweep (empty: no sweep)")
    parser.add_argument("--sweep-uncond-std", type=float_list, default=float_list("0.15,0.3,0.6"),
                        help="oracle unconditioned stds of the sweep (guided runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.guidance_modes = [part.strip() == "on" for part in args.guidance.split(",") if part.strip()]
    args.denoiser_names = [part.strip() for part in args.denoisers.split(",") if part.strip()]
    if len(args.p_seeds) < 2:
        parser.error("--p-seeds needs at least two seeds (the p-sampler's spread is the noise floor)")
    if not args.guidance_modes:
        parser.error("--guidance must name 'on' and/or 'off'")
    if not args.denoiser_names or set(args.denoiser_names) - {"tiny", "oracle"}:
        parser.error("--denoisers must name 'tiny' and/or 'oracle'")
    if not args.dpm_steps:
        parser.error("--dpm-steps must list at least one step count")
    return args


# denoisers ---------------------------------------------------------------------------------------------------------
DenoiserFactory = Callable[[bool, SamplerOptions], Callable[[Tensor, Tensor], Any]]


def shared_reference() -> Path:
    folder = reference_dir()
    if folder is None:
        raise SystemExit("no shared reference found: set $CLVP_REFERENCE_DIR (models/diffusion_tiny, pipeline_tiny)")
    return folder


def tiny_denoisers(candidate: int) -> tuple[DenoiserFactory, int, dict[str, Any]]:
    """The tiny decoder on one pipeline_tiny candidate, as `spectrogram.latents_to_mel` drives it:
    guided -> one batch-2 forward per step over [conditioned; unconditioned]; unguided -> batch 1."""
    folder = shared_reference()
    model_dir = folder / "models" / "diffusion_tiny"
    kwargs = json.loads((model_dir / "config.json").read_text())["kwargs"]
    model = load_diffusion_original(model_dir / "diffusion_decoder.pth", diffusion_config_from_original_kwargs(kwargs))
    model = model.eval().requires_grad_(False)
    cases = load_file(str(folder / "pipeline_tiny" / "cases.safetensors"))
    key = f"s7.cand{candidate}.trimmed_latents"
    if key not in cases:
        raise SystemExit(f"pipeline_tiny has no {key}")
    latents, voice = cases[key][0], cases["s2.diffusion_latent"][0]
    frames = output_frames(latents.shape[0])
    with torch.inference_mode():
        embeddings = model.timestep_independent(latents[None], voice[None], frames)
        both = model.with_unconditioned(embeddings)
    guided = stacked_denoiser(lambda x, t, _free: model(x, t, both).float())
    unguided = lambda x, t: model(x, t, embeddings).float()  # noqa: E731
    info = {"model": str(model_dir / "diffusion_decoder.pth"), "config": model.config.to_dict(), "latents": key,
            "latents_shape": list(latents.shape), "voice_latent": "s2.diffusion_latent",
            "n_params": sum(p.numel() for p in model.parameters())}
    return (lambda is_guided, _options: guided if is_guided else unguided), frames, info


def oracle_denoisers(
    frames: int, std: float, uncond_std: float = ORACLE_UNCOND_STD
) -> tuple[DenoiserFactory, dict[str, Any]]:
    """The exact eps and learned-range variance of x0 ~ N(mu, std^2) (and, for the unconditioned half of guidance,
    N(mu_u, uncond_std^2)) at every step of the schedule a run uses: a perfectly trained model of that toy data."""
    folder = shared_reference()
    mel = load_file(str(folder / "audio_cases.safetensors"))[ORACLE_MEL][0]  # (100, T) log-mel
    if mel.shape[-1] < frames:
        mel = mel.repeat(1, math.ceil(frames / mel.shape[-1]))
    mu = normalize_tacotron_mel(mel[:, :frames]).clamp(-ORACLE_MU_CLIP, ORACLE_MU_CLIP)[None].double()  # (1, 100, F)
    mu_uncond = mu.mean(dim=-1, keepdim=True).expand_as(mu)  # the voice's average spectrum, no words
    alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - linear_betas(TRAINED_DIFFUSION_STEPS)))

    def gaussian_eps(x: Tensor, abar: Tensor, mean: Tensor, s: float) -> Tensor:
        alpha, sigma2 = abar.sqrt(), 1 - abar
        return sigma2.sqrt() * (x - alpha * mean) / (alpha**2 * s**2 + sigma2)

    def factory(is_guided: bool, options: SamplerOptions) -> Callable[[Tensor, Tensor], Any]:
        schedule = sampler_schedule(options)
        index_of = {int(t): i for i, t in enumerate(schedule.timestep_map.tolist())}

        def variance_value(i: int, abar: Tensor) -> Tensor:
            """v in [-1, 1] with exp((v+1)/2 log beta_i + (1-v)/2 log beta~_i) = Var(x_{i-1} | x_i), exact for the data."""
            if i == 0:
                return torch.zeros(())  # p_sample adds no noise at the last step
            beta, log_tilde = schedule.betas[i], schedule.posterior_log_variance_clipped[i]
            posterior_x0 = std**2 * (1 - abar) / (abar * std**2 + 1 - abar)  # Var(x0 | x_i)
            target = torch.exp(log_tilde) + schedule.posterior_mean_coef1[i] ** 2 * posterior_x0
            frac = (torch.log(target) - log_tilde) / (torch.log(beta) - log_tilde)
            return (2 * frac - 1).clamp(-1, 1)

        def one(x: Tensor, t: Tensor, mean: Tensor, s: float) -> Tensor:
            timestep = int(t[0])
            abar = alphas_cumprod[timestep]
            eps = gaussian_eps(x.double(), abar, mean, s)
            v = variance_value(index_of[timestep], abar).expand_as(eps)
            return torch.cat([eps, v], dim=1).float()

        if is_guided:
            return lambda x, t: (one(x, t, mu, std), one(x, t, mu_uncond, uncond_std))
        return lambda x, t: one(x, t, mu, std)

    info = {"data": f"x0 ~ N(mu, {std}^2) per bin and frame, normalised units",
            "mu": f"normalize_tacotron_mel(audio_cases[{ORACLE_MEL!r}])[:, :{frames}] clipped to +-{ORACLE_MU_CLIP}",
            "unconditioned": f"N(time mean of mu per band, {uncond_std}^2)", "std": std, "uncond_std": uncond_std,
            "variance": "exact Var(x_{i-1} | x_i) of each schedule's step i, as the learned-range value v",
            "mu_log_mel_std": float(denormalize_tacotron_mel(mu).std())}
    return factory, info


class Counted:
    """A denoiser that counts its calls (one call = one network forward, batched when guided)."""

    def __init__(self, denoise: Callable[[Tensor, Tensor], Any]):
        self.denoise, self.calls = denoise, 0

    def __call__(self, x: Tensor, t: Tensor) -> Any:
        self.calls += 1
        return self.denoise(x, t)


# errors ------------------------------------------------------------------------------------------------------------
def rmse(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def max_abs(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def errors_against(mel: Tensor, references: list[Tensor]) -> dict[str, float]:
    """Mean (over the reference runs) RMSE and max |diff|, plus the worst RMSE."""
    rmses = [rmse(mel, ref) for ref in references]
    maxes = [max_abs(mel, ref) for ref in references]
    return {"rmse": statistics.fmean(rmses), "rmse_worst": max(rmses), "max_abs": statistics.fmean(maxes)}


def pair_errors(mel: Tensor, ref: Tensor) -> dict[str, float]:
    return {"rmse": rmse(mel, ref), "max_abs": max_abs(mel, ref)}


def spread(mels: list[Tensor]) -> dict[str, float]:
    """Pairwise RMSE / max |diff| between runs that differ only in the p-sampler's per-step noise."""
    pairs = list(itertools.combinations(mels, 2))
    rmses, maxes = [rmse(a, b) for a, b in pairs], [max_abs(a, b) for a, b in pairs]
    return {"rmse": statistics.fmean(rmses), "rmse_min": min(rmses), "rmse_max": max(rmses),
            "max_abs": statistics.fmean(maxes), "pairs": len(pairs)}


def forward_cost_ratio() -> dict[str, Any] | None:
    """batch-2 / batch-1 forward time measured by diffusion_step.py (full size, same machine), if it has run."""
    try:
        data = json.loads(STEP_RESULT.read_text())
        ratio = float(data["ours"]["batch2_vs_cond_batch1"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"batch2_over_batch1": ratio, "from": str(STEP_RESULT), "started": data.get("started"),
            "loadavg_1m": [data.get("system", {}).get("loadavg_1m_at_start"),
                           data.get("system", {}).get("loadavg_1m_at_end")]}


# measuring ---------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def measure(factory: DenoiserFactory, noise: Tensor, guided: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Every run of one denoiser with guidance on or off: references, noise floor, the runs' errors, the choice."""
    shape = tuple(noise.shape)

    def run(sampler: str, steps: int, step_seed: int | None = None) -> dict[str, Any]:
        options = SamplerOptions(sampler=sampler, steps=steps, cond_free=guided)
        counted = Counted(factory(guided, options))
        generator = None if step_seed is None else torch.Generator().manual_seed(step_seed)
        start = time.perf_counter()
        normalised = sample(counted, shape, options, noise=noise.clone(), generator=generator)
        seconds = time.perf_counter() - start
        assert counted.calls == steps, f"{sampler}@{steps}: {counted.calls} network calls"
        return {"mel": denormalize_tacotron_mel(normalised)[0], "forwards": counted.calls, "seconds": seconds,
                "saturated_fraction": float((normalised.abs() >= SATURATED).float().mean()),
                "finite": bool(torch.isfinite(normalised).all())}

    p_ref = {n: [run("p", n, seed) for seed in args.p_seeds] for n in REFERENCE_STEPS}
    det_ref = {"ddim@400": run("ddim", 400), "dpm@400": run("dpm++2m", 400)}
    p_mels = {n: [r["mel"] for r in runs] for n, runs in p_ref.items()}
    floor = {
        "p@200_seed_spread": spread(p_mels[200]),
        "p@400_seed_spread": spread(p_mels[400]),
        "p@200_vs_p@400_same_seed_rmse": statistics.fmean(rmse(a, b) for a, b in zip(p_mels[200], p_mels[400])),
        "ddim@400_vs_dpm@400": pair_errors(det_ref["ddim@400"]["mel"], det_ref["dpm@400"]["mel"]),
        "reference_saturated_fraction": {
            **{f"p@{n}": statistics.fmean(r["saturated_fraction"] for r in runs) for n, runs in p_ref.items()},
            **{name: r["saturated_fraction"] for name, r in det_ref.items()}},
        "p@200_mel_std": float(torch.stack(p_mels[200]).std()),
    }
    noise_floor = floor["p@200_seed_spread"]["rmse"]
    print(f"  p@200 seed-to-seed RMSE {noise_floor:.4f} (p@400: {floor['p@400_seed_spread']['rmse']:.4f}); "
          f"ddim@400 vs dpm@400 RMSE {floor['ddim@400_vs_dpm@400']['rmse']:.4f}", flush=True)

    plan = [("dpm++2m", n, None) for n in args.dpm_steps] + [("ddim", n, None) for n in args.ddim_steps]
    plan += [("p", n, args.p_seeds[0]) for n in args.p_steps]
    rows: list[dict[str, Any]] = []
    for sampler, steps, seed in plan + [("p", 200, "ref"), ("dpm++2m", 400, "ref"), ("ddim", 400, "ref")]:
        reference = seed == "ref"  # the references themselves, for scale (p@200: its first seed against the others)
        if reference:
            out = p_ref[200][0] if sampler == "p" else det_ref["dpm@400" if sampler == "dpm++2m" else "ddim@400"]
            seed = args.p_seeds[0] if sampler == "p" else None
        else:
            out = run(sampler, steps, seed)
        mel = out["mel"]
        rows.append({
            "sampler": sampler, "steps": steps, "p_seed": seed, "reference": reference, "forwards": out["forwards"],
            "seconds": out["seconds"], "finite": out["finite"], "saturated_fraction": out["saturated_fraction"],
            "vs_p@200": errors_against(mel, p_mels[200][1:] if reference and sampler == "p" else p_mels[200]),
            "vs_p@400": errors_against(mel, p_mels[400]),
            "vs_ddim@400": pair_errors(mel, det_ref["ddim@400"]["mel"]),
            "vs_dpm@400": pair_errors(mel, det_ref["dpm@400"]["mel"]),
        })

    dpm_rows = sorted((r for r in rows if r["sampler"] == "dpm++2m" and not r["reference"]), key=lambda r: r["steps"])
    within = [r for r in dpm_rows if r["vs_p@200"]["rmse"] <= noise_floor]
    if within:
        chosen, why = within[0], "smallest step count within the p@200 seed-to-seed spread"
    else:
        chosen = min(dpm_rows, key=lambda r: (r["vs_p@200"]["rmse"], r["steps"]))
        why = "none is within the p@200 spread: the closest"
    errors_vs_p = [r["vs_p@200"]["rmse"] for r in dpm_rows]
    informative = bool(within) or (max(errors_vs_p) - min(errors_vs_p)) > UNINFORMATIVE * noise_floor
    converged = [r for r in dpm_rows if r["vs_dpm@400"]["rmse"] <= args.ode_tol]
    ddim_converged = [r for r in sorted(rows, key=lambda r: r["steps"]) if r["sampler"] == "ddim"
                      and not r["reference"] and r["vs_ddim@400"]["rmse"] <= args.ode_tol]
    choice = {
        "dpm_steps_by_p_spread": chosen["steps"], "why": why, "informative": informative,
        "rmse_vs_p@200": chosen["vs_p@200"]["rmse"], "p@200_seed_spread_rmse": noise_floor,
        "ratio_to_floor": chosen["vs_p@200"]["rmse"] / noise_floor,
        "dpm_rmse_vs_p@200_range": [min(errors_vs_p), max(errors_vs_p)],
        "ode_tol": args.ode_tol,
        "dpm_steps_by_ode_tol": converged[0]["steps"] if converged else None,
        "ddim_steps_by_ode_tol": ddim_converged[0]["steps"] if ddim_converged else None,
    }
    return {"guided": guided, "noise_floor": floor, "runs": rows, "choice": choice}


@torch.inference_mode()
def oracle_sweep(frames: int, noise: Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """DPM-Solver++ discretisation error (RMSE vs dpm@400 from the same start) over oracle variants: data std x the
    unconditioned std (guided only); the worst case per step count and the smallest count within --ode-tol."""
    shape = tuple(noise.shape)
    out: dict[str, Any] = {}
    for guided in args.guidance_modes:
        variants: dict[str, dict[int, float]] = {}
        for std in args.sweep_std:
            for uncond_std in (args.sweep_uncond_std if guided else [ORACLE_UNCOND_STD]):
                factory, _ = oracle_denoisers(frames, std, uncond_std)

                def run(steps: int) -> Tensor:
                    options = SamplerOptions(sampler="dpm++2m", steps=steps, cond_free=guided)
                    return denormalize_tacotron_mel(sample(factory(guided, options), shape, options, noise=noise.clone()))

                reference = run(400)
                name = f"std {std:g}" + (f", uncond std {uncond_std:g}" if guided else "")
                variants[name] = {n: rmse(run(n), reference) for n in args.dpm_steps}
        worst = {n: max(v[n] for v in variants.values()) for n in args.dpm_steps}
        within = [n for n in sorted(worst) if worst[n] <= args.ode_tol]
        out["guided" if guided else "unguided"] = {
            "rmse_vs_dpm@400": variants, "worst": worst, "dpm_steps_by_ode_tol": within[0] if within else None}
    return out


# report ------------------------------------------------------------------------------------------------------------
def print_mode(denoiser: str, mode: str, data: dict[str, Any]) -> None:
    floor, choice = data["noise_floor"], data["choice"]
    print(f"\n[{denoiser}, {mode}] noise floor: p@200 seed-to-seed RMSE {floor['p@200_seed_spread']['rmse']:.4f} "
          f"(max |diff| {floor['p@200_seed_spread']['max_abs']:.3f}); p@400 seed-to-seed "
          f"{floor['p@400_seed_spread']['rmse']:.4f}; ddim@400 vs dpm@400 {floor['ddim@400_vs_dpm@400']['rmse']:.4f}; "
          f"std of the p@200 mels {floor['p@200_mel_std']:.3f}")
    headers = ["sampler@steps", "fwd", "vs p@200", "vs p@400", "vs ddim@400", "vs dpm@400", "x0 clamped"]
    table = []
    for r in data["runs"]:
        label = {"dpm++2m": "dpm", "ddim": "ddim", "p": "p"}[r["sampler"]] + f"@{r['steps']}"
        if r["sampler"] == "p":
            label += f" (seed {r['p_seed']})"
        if r["reference"]:
            label += " [ref]"
        cell = lambda e: f"{e['rmse']:.4f} ({e['max_abs']:.3f})"  # noqa: E731
        table.append([label, r["forwards"], cell(r["vs_p@200"]), cell(r["vs_p@400"]), cell(r["vs_ddim@400"]),
                      cell(r["vs_dpm@400"]), f"{100 * r['saturated_fraction']:.1f}%"])
    print(format_table(headers, table))
    low, high = choice["dpm_rmse_vs_p@200_range"]
    print(f"  -> by the p-sampler's spread: dpm@{choice['dpm_steps_by_p_spread']} ({choice['why']}; RMSE vs p@200 "
          f"{choice['rmse_vs_p@200']:.4f} = {choice['ratio_to_floor']:.2f} x the spread)"
          + ("" if choice["informative"] else f"; NOT informative: every DPM count is {low:.3f}-{high:.3f} from p, "
             f"a range under {100 * UNINFORMATIVE:.0f}% of the spread"))
    print(f"  -> by discretisation error (RMSE vs the 400-step answer <= {choice['ode_tol']} = "
          f"{8.686 * choice['ode_tol']:.2f} dB): dpm@{choice['dpm_steps_by_ode_tol']}, "
          f"ddim@{choice['ddim_steps_by_ode_tol']} (None = no measured count)")


def vs_original_presets(dpm_steps: int, dpm_guided: bool, cost: dict[str, Any] | None) -> dict[str, Any]:
    """DPM-Solver++ at `dpm_steps` against each original preset's step count; where DPM is guided and the preset
    is not, also the time ratio with a guided (batch-2) step's measured cost."""
    per_preset = {}
    for preset_name, original in ORIGINAL_PRESET_STEPS.items():
        item = {"original_steps": original, "original_guided": ORIGINAL_PRESET_GUIDED[preset_name],
                "dpm_steps": dpm_steps, "dpm_guided": dpm_guided, "steps_ratio": original / dpm_steps}
        if cost and dpm_guided and not item["original_guided"]:
            item["time_ratio_with_batch2_cost"] = original / (dpm_steps * cost["batch2_over_batch1"])
        per_preset[preset_name] = item
    return per_preset


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        **result_header("diffusion_samplers", args, " ".join(__doc__.split("\n\n")[1:4]),
                        system_extra={"reference_dir": str(shared_reference().resolve())}),
        "limits": " ".join(__doc__.split("\n\n")[4].split()),
        "denoisers": {},
    }
    tiny_factory, frames, tiny_info = tiny_denoisers(args.candidate)
    shape = (1, tiny_info["config"]["in_channels"], frames)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(args.noise_seed))
    result["setup"] = {"frames": frames, "noise_seed": args.noise_seed, "noise_shape": list(shape)}
    factories: dict[str, tuple[DenoiserFactory, dict[str, Any]]] = {}
    if "tiny" in args.denoiser_names:
        factories["tiny"] = (tiny_factory, tiny_info)
    if "oracle" in args.denoiser_names:
        factories["oracle"] = oracle_denoisers(frames, args.oracle_std)

    for name, (factory, info) in factories.items():
        entry = result["denoisers"][name] = {"info": info, "modes": {}}
        for guided in args.guidance_modes:
            mode = "guided" if guided else "unguided"
            print(f"[{name}, {mode}] {shape[-1]} frames: references p@{list(REFERENCE_STEPS)} x p-seeds "
                  f"{args.p_seeds}, ddim@400, dpm@400, then the few-step runs ...", flush=True)
            entry["modes"][mode] = measure(factory, noise, guided, args)
            write_json_atomic(args.out, result)

    if "oracle" in args.denoiser_names and args.sweep_std:
        print(f"[oracle sweep] data std {args.sweep_std} x unconditioned std {args.sweep_uncond_std}: dpm@"
              f"{args.dpm_steps} vs dpm@400 ...", flush=True)
        result["oracle_sweep"] = oracle_sweep(frames, noise, args)
        write_json_atomic(args.out, result)

    # speed-ups: the step count the measurements support, with guidance (the DPM presets run with it)
    cost = forward_cost_ratio()
    current = {name: {"sampler": p.diffusion.sampler, "steps": p.diffusion.steps, "cond_free": p.diffusion.cond_free}
               for name, p in PRESETS.items()}
    speedups: dict[str, Any] = {}
    for name, entry in result["denoisers"].items():
        mode = "guided" if "guided" in entry["modes"] else next(iter(entry["modes"]))
        choice = entry["modes"][mode]["choice"]
        for criterion, steps in (("p_spread", choice["dpm_steps_by_p_spread"]), ("ode_tol", choice["dpm_steps_by_ode_tol"])):
            if steps is None:
                continue
            speedups[f"{name}/{mode}/{criterion}"] = {
                "dpm_steps": steps, "informative": criterion == "ode_tol" or choice["informative"],
                "vs_original_presets": vs_original_presets(steps, mode == "guided", cost),
            }
    for mode, sweep in result.get("oracle_sweep", {}).items():
        steps = sweep["dpm_steps_by_ode_tol"]
        if steps is None:
            continue
        speedups[f"oracle-sweep worst/{mode}/ode_tol"] = {
            "dpm_steps": steps, "informative": True,
            "vs_original_presets": vs_original_presets(steps, mode == "guided", cost),
        }
    result["speedup"] = {"forward_cost": cost, "by_choice": speedups, "current_presets": current}
    result["memory"] = {"peak_rss_mb": peak_rss_mb()}
    result["system"]["loadavg_1m_at_end"] = load_average()

    load = load_span(result["system"])
    print(f"\nSampler error, {frames} frames, one fixed initial noise (seed {args.noise_seed}); log-mel RMSE (mean max "
          f"|diff|) in natural-log units (1 = 8.7 dB); errors vs p averaged over p seeds {args.p_seeds}; "
          f"1-min load average {load} (accuracy only: timings do not matter here)")
    for name, entry in result["denoisers"].items():
        for mode, data in entry["modes"].items():
            print_mode(name, mode, data)
    for mode, sweep in result.get("oracle_sweep", {}).items():
        print(f"\n[oracle sweep, {mode}] DPM-Solver++ RMSE vs dpm@400 (same start), per oracle variant:")
        table = [[name, *(errors[n] for n in args.dpm_steps)] for name, errors in sweep["rmse_vs_dpm@400"].items()]
        table.append(["worst", *(sweep["worst"][n] for n in args.dpm_steps)])
        print(format_table(["variant", *(f"dpm@{n}" for n in args.dpm_steps)], table, digits=3))
        print(f"  -> smallest count with the worst case <= {args.ode_tol}: dpm@{sweep['dpm_steps_by_ode_tol']}")
    print("\nspeed-up of the supported DPM-Solver++ step count over the original presets (steps ratio; each step one "
          "forward, batched when guided):")
    rows = []
    for key, item in speedups.items():
        for preset_name, entry in item["vs_original_presets"].items():
            rows.append([key + ("" if item["informative"] else " (uninformative)"),
                         f"dpm@{item['dpm_steps']}", preset_name,
                         f"p@{entry['original_steps']}" + ("" if entry["original_guided"] else " unguided"),
                         entry["steps_ratio"], entry.get("time_ratio_with_batch2_cost")])
    print(format_table(["denoiser/mode/criterion", "ours", "vs preset", "original", "steps ratio",
                        "time ratio (batch-2 cost)"], rows))
    if cost:
        print(f"  (a guided batch-2 forward costs {cost['batch2_over_batch1']:.2f}x a batch-1 one at full size: "
              f"{cost['from']})")
    else:
        print("  (run benchmarks/diffusion_step.py first for the batch-2 / batch-1 cost correction)")
    print("  current presets: " + ", ".join(f"{k} {v['sampler']}@{v['steps']}{'' if v['cond_free'] else ' unguided'}"
                                            for k, v in current.items()))
    print("\n" + result["limits"])
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
