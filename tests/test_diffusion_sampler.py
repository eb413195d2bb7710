"""Diffusion math against the original (golden `diffusion_math/` fixtures) and the samplers on an analytic model.

Every step count, spaced t, case name and space_timesteps case comes from the fixture's config.json, so a
reference folder with other values (CLVP_REFERENCE_DIR) works as well.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import read_json, read_tensors

from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline import samplers as ds

GOLDEN_ATOL = 1e-6
BASE_BETAS_PREFIX = "base.linear_betas_"
MEAN_VARIANCE_FIELDS = ("mean", "variance", "log_variance", "pred_xstart")


@pytest.fixture(scope="module")
def math_config(reference_dir):
    return read_json(reference_dir / "diffusion_math" / "config.json")


@pytest.fixture(scope="module")
def math_tensors(reference_dir):
    return read_tensors(reference_dir / "diffusion_math" / "cases.safetensors")


def _fixture_k(config) -> float:
    """The diffuser's cond_free_k, recovered from the recorded ramped weights k (1 - t / n)."""
    guided = [step for step in config["steps"] if step["cond_free"]]
    assert guided, "the fixture has no conditioning-free case"
    implied = [step["cond_free_k_effective"] / (1 - step["t_spaced"] / step["n_steps"]) for step in guided]
    assert max(implied) - min(implied) < 1e-9, implied
    return implied[min(range(len(guided)), key=lambda i: guided[i]["t_spaced"])]  # t = 0: exact


def _trained_steps(tensors) -> int:
    (name,) = [key for key in tensors if key.startswith(BASE_BETAS_PREFIX)]
    return tensors[name].shape[0]


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = GOLDEN_ATOL) -> None:
    error = (actual.double() - expected.double()).abs().max().item()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert error <= atol, f"{what}: max |diff| {error:.3g} > {atol}"


def _stand_in(tensors, cond_free: bool, dtype=torch.float32):
    """The fixture's stand-in model through our interface: fixed outputs whatever x and t are."""
    cond = tensors["in.model_out_cond"].to(dtype)
    uncond = tensors["in.model_out_uncond"].to(dtype)
    return (lambda x, t: (cond, uncond)) if cond_free else (lambda x, t: cond)


# ---------------------------------------------------------------------------------------------------------- golden


def test_linear_betas(math_tensors):
    steps = _trained_steps(math_tensors)
    expected = math_tensors[f"{BASE_BETAS_PREFIX}{steps}"]
    assert torch.equal(torch.from_numpy(ds.linear_betas(steps)), expected)


def test_space_timesteps_cases(math_config, math_tensors):
    steps = _trained_steps(math_tensors)
    cases = math_config["space_timesteps"]
    assert cases
    for key, expected in cases.items():
        section_counts = json.loads(key) if key.startswith("[") else key
        assert sorted(ds.space_timesteps(steps, section_counts)) == expected, key
        if isinstance(section_counts, list):  # the comma-string spelling means the same
            as_text = ",".join(str(count) for count in section_counts)
            assert sorted(ds.space_timesteps(steps, as_text)) == expected, key


def test_spaced_schedules(math_config, math_tensors):
    steps = _trained_steps(math_tensors)
    assert math_config["schedules"]
    for n, recorded in math_config["schedules"].items():
        schedule = ds.spaced_schedule(recorded["num_timesteps"], steps)
        assert schedule.num_steps == recorded["num_timesteps"]
        assert schedule.timestep_map.tolist() == recorded["timestep_map"]
        arrays = {key.split(".", 1)[1]: value for key, value in math_tensors.items() if key.startswith(f"n{n}.")}
        assert "betas" in arrays
        for name, expected in arrays.items():
            actual = getattr(schedule, name)
            assert actual.dtype == torch.float64 and expected.dtype == torch.float64
            _close(actual, expected, f"n{n}.{name}", atol=1e-12)
        for key, value in math_tensors.items():  # per-case copies of the map, e.g. n30_cf1.timestep_map
            if key.startswith(f"n{n}_") and key.endswith(".timestep_map"):
                assert torch.equal(schedule.timestep_map, value.to(torch.int64)), key



def test_golden_steps(math_config, math_tensors):
    """p_mean_variance, p_sample (given its noise), ddim_sample(eta=0) at every recorded (n, t, cond_free)."""
    steps = _trained_steps(math_tensors)
    x = math_tensors["in.x_t"]
    assert math_config["steps"]
    for step in math_config["steps"]:
        key, n, t = step["key"], step["n_steps"], step["t_spaced"]
        schedule = ds.spaced_schedule(n, steps)
        k = _fixture_k(math_config) if step["cond_free"] else None
        seen: list[tuple[list[int], torch.dtype]] = []
        fixed = _stand_in(math_tensors, step["cond_free"])

        def denoise(x_in, timesteps):
            seen.append((timesteps.tolist(), timesteps.dtype))
            return fixed(x_in, timesteps)

        out = ds.p_mean_variance(denoise, schedule, x, t, k)
        for field in MEAN_VARIANCE_FIELDS:
            _close(getattr(out, field), math_tensors[f"{key}.{field}"], f"{key}.{field}")
        # the model sees the ORIGINAL timestep, once per step even with guidance
        assert seen == [(step["model_called_with_timesteps"][0][0], torch.int64)], key
        if k is not None:
            weight = ds.guidance_weight(k, float(schedule.guidance_position[t]))
            assert weight == pytest.approx(step["cond_free_k_effective"], abs=1e-15)

        sampled = ds.p_sample(denoise, schedule, x, t, k, noise=math_tensors[f"{key}.p_sample_noise"])
        _close(sampled, math_tensors[f"{key}.p_sample"], f"{key}.p_sample")
        _close(ds.ddim_sample(denoise, schedule, x, t, k), math_tensors[f"{key}.ddim_sample_eta0"], f"{key}.ddim")


def test_golden_float64_state_agrees_to_float32_precision(math_config, math_tensors):
    """A float64 state gives the same answer up to the original's float32 rounding (DDIM near t = 0 loses most)."""
    steps = _trained_steps(math_tensors)
    x = math_tensors["in.x_t"].double()
    for step in math_config["steps"]:
        key, n, t = step["key"], step["n_steps"], step["t_spaced"]
        schedule = ds.spaced_schedule(n, steps)
        k = _fixture_k(math_config) if step["cond_free"] else None
        denoise = _stand_in(math_tensors, step["cond_free"], torch.float64)
        out = ds.p_mean_variance(denoise, schedule, x, t, k)
        assert out.mean.dtype == torch.float64
        for field in MEAN_VARIANCE_FIELDS:
            _close(getattr(out, field), math_tensors[f"{key}.{field}"], f"{key}.{field}", atol=1e-4)
        _close(ds.ddim_sample(denoise, schedule, x, t, k), math_tensors[f"{key}.ddim_sample_eta0"], key, atol=5e-3)


def test_p_sample_draws_from_generator_and_skips_noise_at_t0(math_tensors):
    steps = _trained_steps(math_tensors)
    x = math_tensors["in.x_t"]
    schedule = ds.spaced_schedule(30, steps)
    denoise = _stand_in(math_tensors, cond_free=False)
    mid = schedule.num_steps // 2
    drawn = ds.p_sample(denoise, schedule, x, mid, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, ds.p_sample(denoise, schedule, x, mid, noise=noise))
    last = ds.p_sample(denoise, schedule, x, 0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(last, ds.p_mean_variance(denoise, schedule, x, 0).mean)


# ------------------------------------------------------------------------------------------------ analytic model

DATA_MEAN = 0.1
DATA_STD = 0.2


@pytest.fixture
def one_thread():
    """The analytic tests use small tensors: on a busy shared machine two threads only add wake-up latency."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gaussian_denoiser(mean: float, std: float, calls: list | None = None):
    """Exact eps for data ~ N(mean, std^2) per element: E[eps | x_t] = sigma (x - a mean) / (a^2 std^2 + sigma^2)."""
    alphas_cumprod = torch.cumprod(1.0 - torch.from_numpy(ds.linear_betas()), 0)

    def denoise(x, t):
        if calls is not None:
            calls.append(t.clone())
        abar = alphas_cumprod[t].to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        eps = sigma * (x - a * mean) / (abar * std**2 + sigma**2)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    return denoise


def _exact_flow(noise: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE answer for the Gaussian model: the x0 prediction at timestep 0 of the flow
    started from `noise` at the last timestep (the standardised value z is constant along the flow)."""
    alphas_cumprod = torch.cumprod(1.0 - torch.from_numpy(ds.linear_betas()), 0)
    abar_first, abar_last = float(alphas_cumprod[-1]), float(alphas_cumprod[0])
    z = (noise - math.sqrt(abar_first) * DATA_MEAN) / math.sqrt(abar_first * DATA_STD**2 + 1 - abar_first)
    return DATA_MEAN + math.sqrt(abar_last) * DATA_STD**2 * z / math.sqrt(abar_last * DATA_STD**2 + 1 - abar_last)


def test_ode_samplers_converge_and_dpm_solver_is_faster(one_thread):
    shape = (2, 4, 256)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    denoise = _gaussian_denoiser(DATA_MEAN, DATA_STD)
    exact = _exact_flow(noise)
    counts = (12, 24, 48)
    errors = {}
    for sampler in ("ddim", "dpm++2m"):
        for steps in counts:
            x0 = ds.sample(denoise, shape, ds.SamplerOptions(sampler, steps=steps, cond_free=False), noise=noise)
            errors[sampler, steps] = (x0 - exact).abs().max().item()
    for sampler in ("ddim", "dpm++2m"):
        assert errors[sampler, 12] > errors[sampler, 24] > errors[sampler, 48], errors
    assert errors["ddim", 12] / errors["ddim", 48] > 3, errors  # first order
    assert errors["dpm++2m", 12] / errors["dpm++2m", 48] > 6, errors  # second order
    assert errors["dpm++2m", 48] < 5e-3, errors
    assert errors["dpm++2m", 12] < errors["ddim", 48] / 2, errors  # fewer steps, better answer


def test_dpm_solver_matches_p_sampler_statistics(one_thread):
    """The p-sampler (many steps) and DPM-Solver++ (few steps) both end at the data distribution N(mean, std^2)."""
    shape = (1, 8, 1000)
    denoise = _gaussian_denoiser(DATA_MEAN, DATA_STD)
    generator = torch.Generator().manual_seed(1)
    slow = ds.sample(denoise, shape, ds.SamplerOptions("p", steps=200, cond_free=False), generator=generator)
    fast = ds.sample(denoise, shape, ds.SamplerOptions("dpm++2m", steps=15, cond_free=False), generator=generator)
    for x0 in (slow, fast):
        assert x0.mean().item() == pytest.approx(DATA_MEAN, abs=0.01)
        assert x0.std().item() == pytest.approx(DATA_STD, abs=0.01)
    assert fast.mean().item() == pytest.approx(slow.mean().item(), abs=0.01)
    assert fast.std().item() == pytest.approx(slow.std().item(), abs=0.01)


def test_guided_ode_samplers_agree_with_many_step_ddim(one_thread):
    """With guidance (two Gaussians, ramped weight) DPM-Solver++ on its own log-SNR steps converges to what
    DDIM on the original's steps converges to (same guidance rule), and far faster."""
    shape = (1, 4, 128)
    cond, uncond = _gaussian_denoiser(0.2, DATA_STD), _gaussian_denoiser(-0.1, 0.3)

    def denoise(x, t):
        return cond(x, t), uncond(x, t)

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = ds.sample(denoise, shape, ds.SamplerOptions("ddim", steps=1000, cond_free_k=2.0), noise=noise)
    errors = {}
    for sampler in ("ddim", "dpm++2m"):
        for steps in (20, 40):
            x0 = ds.sample(denoise, shape, ds.SamplerOptions(sampler, steps=steps, cond_free_k=2.0), noise=noise)
            errors[sampler, steps] = (x0 - reference).abs().max().item()
    assert errors["dpm++2m", 40] < errors["dpm++2m", 20] < errors["ddim", 20] / 4, errors
    assert errors["dpm++2m", 40] < 1e-2, errors


# ---------------------------------------------------------------------------------------------------- interface


@pytest.mark.parametrize("sampler", ds.SAMPLERS)
def test_one_stacked_call_per_step(sampler):
    steps, batch = 7, 2
    shape = (batch, 3, 5)
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    cond, uncond = _gaussian_denoiser(0.2, 0.2), _gaussian_denoiser(-0.1, 0.3)

    def forward(x, t, conditioning_free):
        calls.append((x.clone(), t.clone(), conditioning_free.clone()))
        return torch.cat([cond(x[:batch], t[:batch]), uncond(x[batch:], t[batch:])])

    progress: list[tuple[int, int]] = []
    options = ds.SamplerOptions(sampler=sampler, steps=steps, cond_free=True, cond_free_k=2.0)
    ds.sample(ds.stacked_denoiser(forward), shape, options, generator=torch.Generator().manual_seed(0),
              progress=lambda done, total: progress.append((done, total)))
    assert len(calls) == steps
    assert progress == [(done, steps) for done in range(1, steps + 1)]
    timestep_map = ds.sampler_schedule(options).timestep_map.tolist()
    assert len(timestep_map) == steps
    for (x, t, conditioning_free), original_t in zip(calls, reversed(timestep_map)):
        assert x.shape == (2 * batch, *shape[1:]) and torch.equal(x[:batch], x[batch:])
        assert t.dtype == torch.int64 and t.tolist() == [original_t] * (2 * batch)
        assert conditioning_free.tolist() == [False] * batch + [True] * batch


def test_sample_scales_supplied_noise_by_temperature():
    seen: list[torch.Tensor] = []

    def denoise(x, t):
        seen.append(x.clone())
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x)], dim=1)

    noise = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(0))
    ds.sample(denoise, noise.shape, ds.SamplerOptions("ddim", steps=3, cond_free=False, temperature=0.5), noise=noise)
    assert torch.equal(seen[0], noise * 0.5)


def test_p_sampler_is_reproducible_with_a_generator():
    denoise = _gaussian_denoiser(DATA_MEAN, DATA_STD)
    options = ds.SamplerOptions("p", steps=10, cond_free=False)
    first = ds.sample(denoise, (1, 2, 8), options, generator=torch.Generator().manual_seed(5))
    again = ds.sample(denoise, (1, 2, 8), options, generator=torch.Generator().manual_seed(5))
    other = ds.sample(denoise, (1, 2, 8), options, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.dtype == torch.float32 and first.abs().max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "euler"}, "unknown diffusion sampler"),
        ({"steps": 0}, "between 1 and"),
        ({"steps": ds.TRAINED_DIFFUSION_STEPS + 1}, "between 1 and"),
        ({"steps": 2.5}, "must be an integer"),
        ({"steps": True}, "must be an integer"),
        ({"cond_free": "yes"}, "cond_free must be"),
        ({"cond_free_k": -1.0}, "cond_free_k must be"),
        ({"cond_free_k": float("nan")}, "cond_free_k must be"),
        ({"temperature": -0.1}, "temperature must be"),
        ({"temperature": float("inf")}, "temperature must be"),
        ({"cond_free_k": True}, "cond_free_k must be"),
    ],
)
def test_options_validation(kwargs, message):
    with pytest.raises(OptionsError, match=message):
        ds.SamplerOptions(**kwargs)


def test_space_timesteps_errors():
    with pytest.raises(OptionsError, match="cannot take 20 steps from a section of 10"):
        ds.space_timesteps(20, [20, 1])
    with pytest.raises(OptionsError, match="integer stride"):
        ds.space_timesteps(100, "ddim33")


def test_denoiser_output_mismatch_is_explained():
    schedule = ds.spaced_schedule(5)
    x = torch.zeros(1, 2, 3)
    single = lambda x, t: torch.zeros(1, 4, 3)  # noqa: E731
    with pytest.raises(TypeError, match=r"\(conditioned, unconditioned\)"):
        ds.p_mean_variance(single, schedule, x, 4, cond_free_k=2.0)
    with pytest.raises(TypeError, match="not a pair"):
        ds.p_mean_variance(lambda x, t: (single(x, t), single(x, t)), schedule, x, 4)
    with pytest.raises(ValueError, match=r"\(B, 4, \.\.\.\)"):
        ds.p_mean_variance(lambda x, t: torch.zeros(1, 2, 3), schedule, x, 4)
    with pytest.raises(OptionsError, match="noise has shape"):
        ds.sample(single, (1, 2, 3), ds.SamplerOptions(cond_free=False), noise=torch.zeros(1, 2, 4))
