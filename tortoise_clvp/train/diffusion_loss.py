"""The diffusion decoder's training objective: the forward (noising) process and improved DDPM's hybrid loss.

The network predicts epsilon and a learned-range variance value v in [-1, 1] (the sampler's log-variance is
``frac log beta_t + (1 - frac) log beta~_t`` with frac = (v + 1) / 2, `samplers.mean_variance`). The loss
(Nichol & Dhariwal 2021) is

    MSE(eps, eps_hat)  +  vb_weight * L_vb,

(for a decoder that predicts v, the MSE is taken on v: the epsilon MSE / abar_t, since its eps error is
sqrt(abar_t) times its v error), where L_vb is, in bits per dimension, the KL between the true posterior
q(x_{t-1} | x_t, x_0) and the model's Gaussian at t > 0, and the discretised Gaussian negative log-likelihood of x_0 at t = 0. L_vb sees the predicted
mean through a stopped gradient, so it trains only the variance and the MSE alone shapes epsilon. Timesteps are the
4000 of `samplers.linear_betas`, the schedule every sampler respaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from ..pipeline.samplers import TRAINED_DIFFUSION_STEPS, Schedule, linear_betas

DATA_BINS = 255  # x_0 in [-1, 1] is treated as 256 levels for the t = 0 likelihood (bin half-width 1 / 255)
EDGE = 0.999  # x_0 beyond +-EDGE takes the open-ended first / last bin
PROBABILITY_FLOOR = 1e-12
LOG2 = math.log(2.0)


@lru_cache(maxsize=2)
def training_schedule(steps: int = TRAINED_DIFFUSION_STEPS) -> Schedule:
    """The unspaced linear schedule the decoder is trained on (float64 arrays, indexed by timestep)."""
    return Schedule.from_betas(linear_betas(steps))


def _at(array: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """schedule[t] for each row, shaped (B, 1, 1) in like's dtype."""
    return array.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def q_sample(schedule: Schedule, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for each row's timestep t (B,)."""
    abar = _at(schedule.alphas_cumprod, t, x_start)
    return abar.sqrt() * x_start + (1 - abar).sqrt() * noise


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp logvar1) || N(mean2, exp logvar2)) elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) elementwise, in nats, for x in [-1, 1] quantised to DATA_BINS + 1 levels under
    N(mean, exp(log_scale)^2); the outermost levels take the tails."""
    inverse_std = torch.exp(-log_scale)
    upper = torch.special.ndtr(inverse_std * (x - mean + 1.0 / DATA_BINS))
    lower = torch.special.ndtr(inverse_std * (x - mean - 1.0 / DATA_BINS))
    inner = torch.log((upper - lower).clamp(min=PROBABILITY_FLOOR))
    below = torch.log(upper.clamp(min=PROBABILITY_FLOOR))
    above = torch.log((1.0 - lower).clamp(min=PROBABILITY_FLOOR))
    return torch.where(x < -EDGE, below, torch.where(x > EDGE, above, inner))


@dataclass(frozen=True)
class DiffusionLosses:
    """Per-row loss terms (B,): the epsilon MSE and the variational bound in bits per dimension."""

    mse: Tensor
    vb: Tensor

    def total(self, vb_weight: float) -> Tensor:
        """The scalar to minimise: mean over rows of mse + vb_weight * vb."""
        return (self.mse + vb_weight * self.vb).mean()


def diffusion_losses(
    schedule: Schedule,
    output: Tensor,
    x_start: Tensor,
    x_t: Tensor,
    t: Tensor,
    noise: Tensor,
    prediction: str = "epsilon",
) -> DiffusionLosses:
    """The hybrid loss terms of the decoder's `output` (B, 2C, T) = [eps; variance value] at x_t (B, C, T),
    timesteps t (B,), for the clean x_start and the noise that made x_t; the MSE is in the space of what the
    network predicts (`DiffusionConfig.prediction`)."""
    channels = x_start.shape[1]
    if output.shape[1] != 2 * channels:
        raise ValueError(
            f"the decoder must output eps and the variance ({2 * channels} channels), got {output.shape[1]}"
        )
    eps, var_values = output[:, :channels], output[:, channels:]
    mse = ((noise - eps) ** 2).mean(dim=(1, 2))
    if prediction == "v":
        mse = mse / _at(schedule.alphas_cumprod, t, mse)

    # the model's p(x_{t-1} | x_t) with its mean frozen: L_vb trains the variance only
    pred_xstart = _at(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _at(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    ) * eps.detach()
    model_mean = _at(schedule.posterior_mean_coef1, t, x_t) * pred_xstart + _at(
        schedule.posterior_mean_coef2, t, x_t
    ) * x_t
    frac = (var_values + 1) / 2
    model_log_variance = frac * _at(schedule.log_betas, t, x_t) + (1 - frac) * _at(
        schedule.posterior_log_variance_clipped, t, x_t
    )
    # the true posterior q(x_{t-1} | x_t, x_0)
    true_mean = _at(schedule.posterior_mean_coef1, t, x_t) * x_start + _at(schedule.posterior_mean_coef2, t, x_t) * x_t
    true_log_variance = _at(schedule.posterior_log_variance_clipped, t, x_t)
    kl = normal_kl(true_mean, true_log_variance, model_mean, model_log_variance).mean(dim=(1, 2)) / LOG2
    nll = -discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_variance).mean(dim=(1, 2)) / LOG2
    return DiffusionLosses(mse, torch.where(t == 0, nll, kl))
