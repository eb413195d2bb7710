"""The diffusion math of Tortoise's spectrogram decoder, independent of any network.

Tortoise's decoder is a 4000-step DDPM with a linear beta schedule, an epsilon-predicting network and a
"learned range" variance, sampled on a respaced subset of its timesteps (`space_timesteps`).
This module holds that math and three samplers that share one guidance rule:

- ``"p"``: the original ancestral sampler (``p_sample`` over t = n-1 ... 0), what Tortoise runs;
- ``"ddim"``: DDIM with eta = 0 (deterministic), as the original's ``ddim_sample``;
- ``"dpm++2m"``: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): data prediction, multistep, in log-SNR,
  on its own log-SNR-uniform set of timesteps (the original's even spacing of the linear schedule leaves
  one huge log-SNR jump at the end, where the 2M extrapolation breaks down).

The denoiser
------------
The network is passed in as a callable ``denoise(x, t)``:

- ``x``: (B, C, T) in the sampler's state dtype (the dtype of the initial noise, float32 by default);
  a half-precision network casts it itself;
- ``t``: (B,) int64, the ORIGINAL timesteps 0 ... 3999 (``Schedule.timestep_map`` of the spaced index);
- returns, with conditioning-free guidance OFF: one tensor (B, 2C, T), the first C channels epsilon and the
  last C the learned-range variance value in [-1, 1];
- returns, with guidance ON: a pair ``(conditioned, unconditioned)`` of such tensors. The denoiser is
  called ONCE per step either way, so it can run both in one batch-2B forward; `stacked_denoiser` builds
  such a callable from ``forward(x (2B, C, T), t (2B,), conditioning_free (2B,) bool) -> (2B, 2C, T)``
  with the conditioned rows first.

Guidance (the original's ramped weight): eps = (1 + k_eff) eps_cond - k_eff eps_uncond with
``k_eff = k * (1 - t / n)`` for the SPACED index t of an n-step schedule (about 0 at the first, noisiest
step, k at the last); the variance value always comes from the conditioned output. DPM-Solver++'s steps use
the same formula with t / n replaced by timestep / 4000, the limit of the original's t / n for many steps
(``Schedule.guidance_position``), so all three approach the same guided answer.

RNG: `sample(..., generator=None)` draws the initial noise and then one normal per step (also at t = 0,
where it is unused) from the global RNG, in the original's order.

Schedules are built in float64 like the original; each per-step coefficient is cast to the state dtype
where it meets a tensor, as the original's ``_extract_into_tensor`` does (so float32 runs reproduce it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionsError

TRAINED_DIFFUSION_STEPS = 4000  # the released diffusion decoder was trained with this many steps
LINEAR_SCHEDULE_REFERENCE_STEPS = 1000  # Ho et al.'s linear schedule is defined for 1000 steps
LINEAR_BETA_START = 1e-4  # ... from this beta (at 1000 steps)
LINEAR_BETA_END = 0.02  # ... to this one; both scale by 1000 / num_timesteps
DDIM_STRIDE_PREFIX = "ddim"  # space_timesteps("ddimN"): the DDIM paper's fixed integer stride
PRED_XSTART_CLIP = 1.0  # the predicted clean mel is clamped to [-1, 1] (clip_denoised=True)

SAMPLERS = ("p", "ddim", "dpm++2m")

ModelOutput = Union[Tensor, "tuple[Tensor, Tensor]"]
Denoiser = Callable[[Tensor, Tensor], ModelOutput]
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------------------------
# Schedules


def linear_betas(num_timesteps: int = TRAINED_DIFFUSION_STEPS) -> np.ndarray:
    """Ho et al.'s linear beta schedule stretched to `num_timesteps` steps (float64)."""
    scale = LINEAR_SCHEDULE_REFERENCE_STEPS / num_timesteps
    return np.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_timesteps, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: Union[str, Sequence[int]]) -> set[int]:
    """The original timesteps to keep when respacing a `num_timesteps` process.

    `section_counts`: a list of step counts, one per equal part of the process (e.g. [10, 20]: 10 steps from
    the first half, 20 from the second), the same as a comma-separated string, or ``"ddimN"`` for the DDIM
    paper's single integer stride giving exactly N steps. Positions inside a section advance by a float
    stride and are rounded with Python's round() (half to even), as the original does.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith(DDIM_STRIDE_PREFIX):
            wanted = int(section_counts[len(DDIM_STRIDE_PREFIX) :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == wanted:
                    return set(range(0, num_timesteps, stride))
            raise OptionsError(f"cannot take exactly {wanted} of {num_timesteps} steps with an integer stride")
        section_counts = [int(part) for part in section_counts.split(",")]
    counts = list(section_counts)
    base_size, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    section_start = 0
    for index, count in enumerate(counts):
        size = base_size + (1 if index < extra else 0)
        if size < count:
            raise OptionsError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(section_start + round(position))
            position += stride  # accumulated, not index * stride: the rounding depends on it
        section_start += size
    return set(kept)


def respace_betas(betas: np.ndarray, use_timesteps: set[int]) -> tuple[np.ndarray, list[int]]:
    """Betas of the process that visits only `use_timesteps`, keeping alphas_cumprod at those steps unchanged.

    Returns (spaced betas, timestep_map) where timestep_map[i] is the original timestep of spaced step i.
    """
    alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    previous = 1.0
    spaced: list[float] = []
    timestep_map: list[int] = []
    for step, alpha_cumprod in enumerate(alphas_cumprod):
        if step in use_timesteps:
            spaced.append(1.0 - alpha_cumprod / previous)
            previous = alpha_cumprod
            timestep_map.append(step)
    return np.array(spaced, dtype=np.float64), timestep_map


@dataclass(frozen=True, eq=False)
class Schedule:
    """A (possibly respaced) DDPM schedule: float64 arrays indexed by the spaced step 0 ... n-1.

    Field names follow the original GaussianDiffusion attributes. `timestep_map[i]` is the original
    timestep (what the network sees) of spaced step i.
    """

    betas: Tensor
    timestep_map: Tensor  # int64
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor  # step 0's (zero) variance replaced by step 1's before the log
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    log_betas: Tensor  # the learned-range upper bound
    guidance_position: Tensor  # how far along the run each step is, for the ramped guidance weight


    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def from_betas(
        cls,
        betas: np.ndarray,
        timestep_map: Sequence[int] | None = None,
        guidance_position: np.ndarray | None = None,
    ) -> "Schedule":
        """Derive every array from `betas`. `guidance_position` defaults to t / n, the original's ramp."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise OptionsError("betas must be a 1-D array of values in (0, 1]")
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        clipped = np.append(posterior_variance[1], posterior_variance[1:]) if len(betas) > 1 else posterior_variance
        arrays = dict(
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=np.log(clipped),
            posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
            log_betas=np.log(betas),
            guidance_position=np.arange(len(betas)) / len(betas) if guidance_position is None else guidance_position,
        )
        steps = list(range(len(betas))) if timestep_map is None else list(timestep_map)
        if len(steps) != len(betas) or len(arrays["guidance_position"]) != len(betas):
            raise OptionsError(f"timestep_map and guidance_position need one entry per beta ({len(betas)})")
        return cls(
            timestep_map=torch.tensor(steps, dtype=torch.int64),
            **{name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)) for name, value in arrays.items()},
        )


@lru_cache(maxsize=16)
def spaced_schedule(steps: int, trained_steps: int = TRAINED_DIFFUSION_STEPS) -> Schedule:
    """The linear schedule of `trained_steps` respaced to `steps` evenly spread steps
    (the original `load_discrete_vocoder_diffuser(trained_steps, steps)`)."""
    betas, timestep_map = respace_betas(linear_betas(trained_steps), space_timesteps(trained_steps, [steps]))
    return Schedule.from_betas(betas, timestep_map)


def _log_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """lambda = log(alpha / sigma) with alpha = sqrt(abar), sigma = sqrt(1 - abar)."""
    return 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))


def log_snr_timesteps(steps: int, trained_steps: int = TRAINED_DIFFUSION_STEPS) -> list[int]:
    """`steps` distinct original timesteps, ascending, nearest a grid uniform in log-SNR from timestep 0 to the
    last one (DPM-Solver's "logSNR" spacing). Where the grid is finer than the integer timesteps (near 0,
    from about 100 steps) the choice is pushed to the next free timestep, so there are always `steps`."""
    if not 1 <= steps <= trained_steps:
        raise OptionsError(f"cannot take {steps} of {trained_steps} timesteps")
    if steps == 1:
        return [trained_steps - 1]
    decreasing = _log_snr(np.cumprod(1.0 - linear_betas(trained_steps)))
    ascending = -decreasing
    chosen: list[int] = []
    for index, target in enumerate(np.linspace(ascending[0], ascending[-1], steps)):
        above = int(np.searchsorted(ascending, target).clip(0, trained_steps - 1))
        below = max(above - 1, 0)
        nearest = below if abs(ascending[below] - target) <= abs(ascending[above] - target) else above
        lowest = chosen[-1] + 1 if chosen else 0
        chosen.append(min(max(nearest, lowest), trained_steps - steps + index))
    return chosen


@lru_cache(maxsize=16)
def log_snr_schedule(steps: int, trained_steps: int = TRAINED_DIFFUSION_STEPS) -> Schedule:
    """The linear schedule restricted to `log_snr_timesteps` (what DPM-Solver++ runs on).

    Its guidance position is timestep / trained_steps: the original's t / n ramp in the limit of many
    steps, so the guided answer is the one the p-sampler approaches, whatever the spacing."""
    timesteps = log_snr_timesteps(steps, trained_steps)
    betas, timestep_map = respace_betas(linear_betas(trained_steps), set(timesteps))
    return Schedule.from_betas(betas, timestep_map, np.asarray(timestep_map, dtype=np.float64) / trained_steps)


# --------------------------------------------------------------------------------------------------------------
# One network evaluation: guidance, x0 prediction, the reverse-step distribution


@dataclass(frozen=True, eq=False)
class Prediction:
    """The guided network output at one step: epsilon, the variance value, and the clamped x0 it implies."""

    eps: Tensor
    var_values: Tensor
    pred_xstart: Tensor


@dataclass(frozen=True, eq=False)
class MeanVariance:
    """p(x_{t-1} | x_t) as the original's p_mean_variance returns it (variance computed on demand)."""

    mean: Tensor
    log_variance: Tensor
    pred_xstart: Tensor

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.log_variance)


def _coef(array: Tensor, t: int, like: Tensor) -> Tensor:
    """One float64 schedule entry cast to the state dtype (the original's _extract_into_tensor(...).float())."""
    return array[t].to(dtype=like.dtype, device=like.device)


def guidance_weight(cond_free_k: float, position: float) -> float:
    """The original's ramped conditioning-free weight k * (1 - position); position = t / n for spaced step t
    of n (``Schedule.guidance_position``): about 0 at the noisiest step, k at the last."""
    return cond_free_k * (1 - position)


def _split_output(output: Tensor, channels: int, what: str) -> tuple[Tensor, Tensor]:
    if not isinstance(output, Tensor) or output.ndim < 2 or output.shape[1] != 2 * channels:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"the denoiser's {what} output must be (B, {2 * channels}, ...) (eps, variance), got {shape}")
    return output[:, :channels], output[:, channels:]


def guided_model_output(
    denoise: Denoiser, schedule: Schedule, x: Tensor, t: int, cond_free_k: float | None
) -> tuple[Tensor, Tensor]:
    """Call the denoiser once at spaced step t and apply guidance: (eps, variance value) in x's dtype.

    `cond_free_k` None: no guidance, `denoise` returns one tensor. Otherwise it returns (cond, uncond) and
    eps = (1 + k_eff) eps_cond - k_eff eps_uncond with the ramped k_eff; the variance value is the
    conditioned one. Every sampler goes through here.
    """
    timesteps = schedule.timestep_map[t].to(x.device).expand(x.shape[0]).clone()
    output = denoise(x, timesteps)
    channels = x.shape[1]
    if cond_free_k is None:
        if isinstance(output, (tuple, list)):
            raise TypeError("conditioning-free guidance is off: the denoiser must return one tensor, not a pair")
        eps, var_values = _split_output(output, channels, "")
        return eps.to(x.dtype), var_values.to(x.dtype)
    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise TypeError("conditioning-free guidance is on: the denoiser must return (conditioned, unconditioned)")
    eps, var_values = _split_output(output[0], channels, "conditioned")
    eps_uncond, _ = _split_output(output[1], channels, "unconditioned")
    weight = guidance_weight(cond_free_k, float(schedule.guidance_position[t]))
    eps = (1 + weight) * eps.to(x.dtype) - weight * eps_uncond.to(x.dtype)
    return eps, var_values.to(x.dtype)


def predict(denoise: Denoiser, schedule: Schedule, x: Tensor, t: int, cond_free_k: float | None) -> Prediction:
    """Guided eps and variance value at spaced step t, and x0 = x / sqrt(abar) - sqrt(1/abar - 1) eps in [-1, 1]."""
    eps, var_values = guided_model_output(denoise, schedule, x, t, cond_free_k)
    pred_xstart = _coef(schedule.sqrt_recip_alphas_cumprod, t, x) * x - _coef(
        schedule.sqrt_recipm1_alphas_cumprod, t, x
    ) * eps
    return Prediction(eps, var_values, pred_xstart.clamp(-PRED_XSTART_CLIP, PRED_XSTART_CLIP))


def mean_variance(schedule: Schedule, x: Tensor, t: int, prediction: Prediction) -> MeanVariance:
    """The posterior q(x_{t-1} | x_t, x0 = pred_xstart) mean, with the learned-range variance
    exp(frac log beta_t + (1 - frac) log posterior_variance_t), frac = (value + 1) / 2."""
    mean = _coef(schedule.posterior_mean_coef1, t, x) * prediction.pred_xstart + _coef(
        schedule.posterior_mean_coef2, t, x
    ) * x
    frac = (prediction.var_values + 1) / 2
    log_variance = frac * _coef(schedule.log_betas, t, x) + (1 - frac) * _coef(
        schedule.posterior_log_variance_clipped, t, x
    )
    return MeanVariance(mean, log_variance, prediction.pred_xstart)


def p_mean_variance(
    denoise: Denoiser, schedule: Schedule, x: Tensor, t: int, cond_free_k: float | None = None
) -> MeanVariance:
    """The original SpacedDiffusion.p_mean_variance(model, x, t, clip_denoised=True) at spaced step t."""
    return mean_variance(schedule, x, t, predict(denoise, schedule, x, t, cond_free_k))


def _standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def p_sample(
    denoise: Denoiser,
    schedule: Schedule,
    x: Tensor,
    t: int,
    cond_free_k: float | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x_{t-1} = mean + exp(log_variance / 2) * noise, with no noise at t = 0.

    Without `noise`, one standard normal draw is taken from `generator` (the global RNG when None) after
    the network call, at every step including t = 0, so the RNG advances as in the original.
    """
    out = p_mean_variance(denoise, schedule, x, t, cond_free_k)
    if noise is None:
        noise = _standard_normal(x, generator)
    if t == 0:
        return out.mean
    return out.mean + torch.exp(0.5 * out.log_variance) * noise


def ddim_step(schedule: Schedule, x: Tensor, t: int, pred_xstart: Tensor) -> Tensor:
    """DDIM (eta = 0) from spaced step t to t-1, with eps re-derived from the clamped x0 as the original does."""
    eps = (_coef(schedule.sqrt_recip_alphas_cumprod, t, x) * x - pred_xstart) / _coef(
        schedule.sqrt_recipm1_alphas_cumprod, t, x
    )
    # Cast first, then sqrt(1 - abar_prev) in the state dtype, as the original: in float32 this loses ~3 digits
    # near t = 0 (abar_prev ~ 1), and the golden values carry that rounding.
    alpha_bar_prev = _coef(schedule.alphas_cumprod_prev, t, x)
    return pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev) * eps


def ddim_sample(
    denoise: Denoiser, schedule: Schedule, x: Tensor, t: int, cond_free_k: float | None = None
) -> Tensor:
    """The original ddim_sample(model, x, t, clip_denoised=True, eta=0)."""
    return ddim_step(schedule, x, t, predict(denoise, schedule, x, t, cond_free_k).pred_xstart)


# --------------------------------------------------------------------------------------------------------------
# Loops


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _step_down(
    step: Callable[[Tensor, int], Tensor], schedule: Schedule, x: Tensor, progress: Progress | None
) -> Tensor:
    """x <- step(x, t) for t = n-1 ... 0, reporting progress after each step."""
    total = schedule.num_steps
    for done, t in enumerate(reversed(range(total)), start=1):
        x = step(x, t)
        _report(progress, done, total)
    return x


def p_sample_loop(
    denoise: Denoiser,
    schedule: Schedule,
    x: Tensor,
    cond_free_k: float | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """Ancestral sampling over t = n-1 ... 0 from x (the already scaled initial noise)."""
    return _step_down(
        lambda x, t: p_sample(denoise, schedule, x, t, cond_free_k, generator=generator), schedule, x, progress
    )


def ddim_sample_loop(
    denoise: Denoiser,
    schedule: Schedule,
    x: Tensor,
    cond_free_k: float | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """Deterministic DDIM (eta = 0) over t = n-1 ... 0."""
    return _step_down(lambda x, t: ddim_sample(denoise, schedule, x, t, cond_free_k), schedule, x, progress)


def dpm_solver_pp_2m_loop(
    denoise: Denoiser,
    schedule: Schedule,
    x: Tensor,
    cond_free_k: float | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) over the schedule's steps n-1 ... 0
    (`sample` gives it `log_snr_schedule`, where every h is the same).

    With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t),
    h = lambda_t - lambda_s and D the guided, clamped x0 prediction:
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D,
    where D = D_s on the first step and D = (1 + 1/(2r)) D_s - 1/(2r) D_prev after it (r = h_prev / h).
    Step 0 returns its x0 prediction (its sigma is 0 after it), like the other samplers' last step.
    One network call per step.
    """
    alphas_cumprod = schedule.alphas_cumprod.tolist()
    alpha = [math.sqrt(a) for a in alphas_cumprod]
    sigma = [math.sqrt(1.0 - a) for a in alphas_cumprod]
    log_snr = [math.log(a) - math.log(s) for a, s in zip(alpha, sigma)]
    total = schedule.num_steps
    previous_x0: Tensor | None = None
    previous_h = 0.0
    for done, s in enumerate(reversed(range(total)), start=1):
        x0 = predict(denoise, schedule, x, s, cond_free_k).pred_xstart
        if s == 0:
            x = x0
        else:
            t = s - 1
            h = log_snr[t] - log_snr[s]
            if previous_x0 is None:
                direction = x0
            else:
                half_inverse_ratio = h / (2.0 * previous_h)  # 1 / (2r), r = previous_h / h
                direction = (1.0 + half_inverse_ratio) * x0 - half_inverse_ratio * previous_x0
            x = (sigma[t] / sigma[s]) * x - (alpha[t] * math.expm1(-h)) * direction
            previous_x0, previous_h = x0, h
        _report(progress, done, total)
    return x


# --------------------------------------------------------------------------------------------------------------
# Entry point


def _is_finite_nonnegative(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class SamplerOptions:
    """How the spectrogram decoder is sampled.

    sampler: "p" (the original ancestral sampler), "ddim" (eta = 0) or "dpm++2m" (DPM-Solver++(2M), which
        gets close to the p-sampler's quality in far fewer steps).
    steps: how many of the 4000 trained steps are visited (Tortoise presets: 30, 80, 200, 400; tts() 100).
    cond_free: conditioning-free guidance; the denoiser then returns (conditioned, unconditioned).
    cond_free_k: the guidance weight k, ramped as k * (1 - t / steps) (Tortoise: 2); 0 = no guidance.
    temperature: scale of the initial noise (Tortoise's diffusion_temperature, 1.0); 0 starts from zeros.
    """

    sampler: str = "p"
    steps: int = 100
    cond_free: bool = True
    cond_free_k: float = 2.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise OptionsError(f"unknown diffusion sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int):
            raise OptionsError(f"diffusion steps must be an integer, got {self.steps!r}")
        if not 1 <= self.steps <= TRAINED_DIFFUSION_STEPS:
            raise OptionsError(
                f"diffusion steps must be between 1 and {TRAINED_DIFFUSION_STEPS} (the trained steps), got {self.steps}"
            )
        if not isinstance(self.cond_free, bool):
            raise OptionsError(f"cond_free must be True or False, got {self.cond_free!r}")
        if not _is_finite_nonnegative(self.cond_free_k):
            raise OptionsError(f"cond_free_k must be a finite number >= 0 (Tortoise: 2), got {self.cond_free_k!r}")
        if not _is_finite_nonnegative(self.temperature):
            raise OptionsError(f"temperature must be a finite number >= 0 (Tortoise: 1), got {self.temperature!r}")

    @property
    def guidance_k(self) -> float | None:
        """The k the samplers get: None when guidance is off."""
        return float(self.cond_free_k) if self.cond_free else None


def sampler_schedule(options: SamplerOptions) -> Schedule:
    """The steps a sampler visits: the original's evenly respaced ones for "p" and "ddim", a log-SNR-uniform
    set for "dpm++2m" (its multistep extrapolation needs steady step sizes)."""
    return log_snr_schedule(options.steps) if options.sampler == "dpm++2m" else spaced_schedule(options.steps)


@torch.no_grad()
def sample(
    denoise: Denoiser,
    shape: Sequence[int],
    options: SamplerOptions,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Run the chosen sampler from `temperature * noise` and return x0 (normalised mel, in [-1, 1]).

    `noise`: standard normal of `shape` (its dtype/device become the state's); drawn from `generator`
    (or the global RNG) with `device`/`dtype` when None. The p-sampler also draws its per-step noise from
    `generator`. `progress(done, total)` is called after every step.
    """
    shape = tuple(int(size) for size in shape)
    if noise is None:
        if device is None and generator is not None:
            device = generator.device
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    elif tuple(noise.shape) != shape:
        raise OptionsError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
    x = noise * options.temperature
    schedule, k = sampler_schedule(options), options.guidance_k
    if options.sampler == "p":
        return p_sample_loop(denoise, schedule, x, k, generator=generator, progress=progress)
    if options.sampler == "ddim":
        return ddim_sample_loop(denoise, schedule, x, k, progress=progress)
    return dpm_solver_pp_2m_loop(denoise, schedule, x, k, progress=progress)


def stacked_denoiser(forward: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Denoiser:
    """A guided denoiser that runs ONE batch stacking the conditioned and unconditioned inputs.

    `forward(x (2B, C, T), t (2B,), conditioning_free (2B,) bool) -> (2B, 2C, T)` gets x and t twice,
    the first B rows conditioned (conditioning_free False) and the last B not; the result is split back
    into (conditioned, unconditioned).
    """

    def denoise(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        batch = x.shape[0]
        conditioning_free = torch.arange(2 * batch, device=x.device) >= batch
        out = forward(torch.cat([x, x]), torch.cat([t, t]), conditioning_free)
        return out[:batch], out[batch:]

    return denoise
