"""The diffusion decoder against the original `DiffusionTts` (tiny golden fixture), its loader, and bad files.

Every size, case and timestep comes from the fixture's config.json / cases.safetensors, so a folder with other
tiny sizes or seeds (CLVP_REFERENCE_DIR) runs the same tests.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import read_json, read_tensors

from tortoise_clvp.config import DiffusionConfig
from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.models.diffusion import (
    DiffusionModel,
    output_frames,
    relative_position_buckets,
)
from tortoise_clvp.models.layers import GroupNorm32
from tortoise_clvp.weights.original_diffusion import (
    diffusion_config_from_original_kwargs,
    diffusion_config_from_state,
    diffusion_state_from_original,
    load_diffusion_original,
)

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny(reference_dir):
    """(model, cases, config.json, config, original state) for the tiny diffusion fixture."""
    folder = reference_dir / "models" / "diffusion_tiny"
    meta = read_json(folder / "config.json")
    config = diffusion_config_from_original_kwargs(meta["kwargs"])
    state = torch.load(folder / "diffusion_decoder.pth", weights_only=True)
    model = load_diffusion_original(folder / "diffusion_decoder.pth", config)
    return model, read_tensors(folder / "cases.safetensors"), meta, config, state


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _conditioning_mels(reference_dir, meta) -> torch.Tensor:
    audio = read_tensors(reference_dir / "audio_cases.safetensors")
    keys = meta["get_conditioning_input"]["audio_cases_keys"]
    return torch.stack([audio[k][0] for k in keys], 0).unsqueeze(0)  # (1, clips, 100, T)


def _forward_cases(cases) -> list[tuple[int, str]]:
    pattern = re.compile(r"forward\.t(\d+)\.(cond|uncond)")
    found = sorted((int(m.group(1)), m.group(2)) for k in cases if (m := pattern.fullmatch(k)))
    assert found, "the fixture has no forward.t<T>.<cond|uncond> cases"
    return found


@torch.inference_mode()
def test_config_is_read_from_shapes(tiny):
    model, _, _, config, state = tiny
    assert diffusion_config_from_state(state) == config
    assert load_diffusion_original(dict(state)).config == config
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@torch.inference_mode()
def test_get_conditioning(tiny, reference_dir):
    model, cases, meta, _, _ = tiny
    mels = _conditioning_mels(reference_dir, meta)
    _close(model.get_conditioning(mels), cases["get_conditioning.out"], "get_conditioning")


@torch.inference_mode()
def test_timestep_independent(tiny):
    model, cases, _, _, _ = tiny
    kinds = sorted(m.group(1) for k in cases if (m := re.fullmatch(r"timestep_independent\.in\.(\w+)", k)))
    assert kinds, "the fixture has no timestep_independent cases"
    for kind in kinds:
        aligned, expected = cases[f"timestep_independent.in.{kind}"], cases[f"timestep_independent.out.{kind}"]
        frames = expected.shape[-1]
        assert frames == output_frames(aligned.shape[1])
        got = model.timestep_independent(aligned, cases["get_conditioning.out"], frames)
        _close(got, expected, f"timestep_independent({kind})")


@torch.inference_mode()
def test_forward_cond_and_uncond(tiny):
    model, cases, _, _, _ = tiny
    x = cases["forward.in.x"]
    embeddings = {
        "cond": cases["timestep_independent.out.latents"],  # what the original was given as precomputed
        "uncond": model.unconditioned_embeddings(x.shape[0], x.shape[-1]),
    }
    for t, kind in _forward_cases(cases):
        got = model(x, torch.full((x.shape[0],), t), embeddings[kind])
        _close(got, cases[f"forward.t{t}.{kind}"], f"forward t={t} {kind}")


@torch.inference_mode()
def test_forward_direct_with_code_prediction(tiny):
    """The original's forward(aligned_conditioning=..., return_code_pred=True) = timestep_independent at x's
    length, forward on it, and predict_mel of the same embeddings."""
    model, cases, _, _, _ = tiny
    if "forward_direct.out" not in cases:
        pytest.skip("no forward_direct case in this fixture")
    x = cases["forward_direct.in.x"]
    latents, cond_latent = cases["forward_direct.in.latents"], cases["forward_direct.in.cond_latent"]
    embeddings = model.timestep_independent(latents, cond_latent, x.shape[-1])
    _close(model(x, cases["forward_direct.in.timesteps"], embeddings), cases["forward_direct.out"], "forward_direct")
    _close(model.predict_mel(embeddings), cases["forward_direct.out.mel_pred"], "forward_direct mel_pred")


@torch.inference_mode()
def test_batched_cond_uncond_equals_separate_forwards(tiny):
    model, cases, _, _, _ = tiny
    x = cases["forward.in.x"]
    cond = cases["timestep_independent.out.latents"]
    uncond = model.unconditioned_embeddings(1, x.shape[-1])
    for t, _ in _forward_cases(cases)[::2]:
        ts = torch.tensor([t])
        both = model(x.repeat(2, 1, 1), ts.repeat(2), model.with_unconditioned(cond))  # rows [cond, uncond]
        torch.testing.assert_close(both[:1], model(x, ts, cond), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both[1:], model(x, ts, uncond), atol=1e-5, rtol=1e-5)
    # a batch-1 embedding broadcasts over the rows of x
    broadcast = model(x.repeat(2, 1, 1), ts.repeat(2), cond)
    torch.testing.assert_close(broadcast[1:], model(x, ts, cond), atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_position_bias_is_the_t5_bias_of_every_query_key_pair(tiny):
    """The Toeplitz layout equals a lookup of every (query, key) pair, also past max_distance."""
    model, _, _, config, _ = tiny
    block = model.layers[0].attn if config.num_layers else model.integrator[0].attn
    length = 3 * config.rel_pos_max_distance + 5
    pos = torch.arange(length)
    offsets = pos[:, None] - pos[None, :]  # query - key
    buckets = relative_position_buckets(offsets, config.rel_pos_buckets, config.rel_pos_max_distance)
    head_dim = config.model_channels // config.num_heads
    expected = block.rel_bias.weight[buckets].permute(2, 0, 1) * head_dim**0.5  # (H, T, T)
    torch.testing.assert_close(block.position_bias(length), expected, atol=0, rtol=0)


def test_full_size_keys_all_map(reference_dir):
    """Every key of the released file (listed with shapes) maps onto the released-size model built on meta."""
    listing = read_json(reference_dir / "keys" / "diffusion_decoder.json")
    config = diffusion_config_from_original_kwargs(listing["kwargs"])
    assert config == DiffusionConfig.RELEASED
    state = {item["key"]: torch.empty(item["shape"], device="meta") for item in listing["keys"]}
    assert len(state) == listing["n_tensors"]
    assert diffusion_config_from_state(state) == config
    mapped = diffusion_state_from_original(state, config)
    with torch.device("meta"):
        model = DiffusionModel(config)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == listing["n_parameters"]
    loaded = load_diffusion_original(state)  # stays on meta: nothing allocated
    assert loaded.config == config and not loaded.training


# bad files -----------------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_diffusion_original(tmp_path / "diffusion_decoder.pth")


def test_corrupt_and_truncated_files(tmp_path, reference_dir):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_diffusion_original(garbage)
    data = (reference_dir / "models" / "diffusion_tiny" / "diffusion_decoder.pth").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_diffusion_original(truncated)


def _pick_key(state) -> str:
    return next(k for k in state if re.fullmatch(r"layers\.0\.attn\.proj_out\.bias", k))


def test_removed_extra_and_misshaped_keys_are_listed(tiny):
    _, _, _, config, state = tiny
    key = _pick_key(state)
    removed = {k: v for k, v in state.items() if k != key}
    for cfg in (config, None):
        with pytest.raises(CheckpointError, match=re.escape(key)) as info:
            load_diffusion_original(removed, cfg)
        assert "missing keys (1)" in str(info.value)
    with pytest.raises(CheckpointError, match="unexpected keys \\(1\\)") as info:
        load_diffusion_original({**state, "layers.0.attn.extra": torch.zeros(3)}, config)
    assert "layers.0.attn.extra" in str(info.value)
    with pytest.raises(CheckpointError, match="mis-shaped keys \\(1\\)") as info:
        load_diffusion_original({**state, key: torch.zeros(state[key].shape[0] + 1)}, config)
    assert key in str(info.value)
    with pytest.raises(CheckpointError, match="inp_block.weight"):  # a size-defining key: clear even without config
        load_diffusion_original({k: v for k, v in state.items() if k != "inp_block.weight"})


def test_config_that_does_not_fit_is_reported(tiny):
    _, _, _, config, state = tiny
    wider = DiffusionConfig(**{**config.to_dict(), "num_layers": config.num_layers + 1})
    with pytest.raises(CheckpointError, match="missing keys"):
        load_diffusion_original(state, wider)


def test_autoregressive_checkpoint_in_the_diffusion_slot(reference_dir):
    with pytest.raises(CheckpointError, match="autoregressive") as info:
        load_diffusion_original(reference_dir / "models" / "ar_tiny" / "autoregressive.pth")
    assert "diffusion" in str(info.value)


def test_a_masked_padded_row_gives_what_the_row_gives_alone(tiny_models):
    diffusion = tiny_models["diffusion"]
    generator = torch.Generator().manual_seed(0)
    c, bands = diffusion.config.model_channels, diffusion.config.in_channels
    short, long = 13, 21
    x = torch.randn(2, bands, long, generator=generator)
    embeddings = torch.randn(2, c, long, generator=generator)
    timesteps = torch.tensor([3000, 100])
    mask = (torch.arange(long) < torch.tensor([short, long])[:, None])[:, None]  # (2, 1, T)
    with torch.inference_mode():
        batched = diffusion(x, timesteps, embeddings, mask)
        alone = diffusion(x[:1, :, :short], timesteps[:1], embeddings[:1, :, :short])
        unmasked = diffusion(x, timesteps, embeddings)
        full = diffusion(x[1:], timesteps[1:], embeddings[1:])
    torch.testing.assert_close(batched[0, :, :short], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], full[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[0, :, :short], alone[0], atol=1e-3)  # padding leaks in without the mask


def test_masked_group_norm_uses_only_the_real_frames():
    norm = GroupNorm32(2, 4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    x = torch.randn(1, 4, 10)
    padded = torch.cat([x[:, :, :6], torch.full((1, 4, 4), 50.0)], dim=2)
    mask = (torch.arange(10) < 6)[None, None]
    torch.testing.assert_close(norm(padded, mask)[:, :, :6], norm(x[:, :, :6]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x, torch.ones(1, 1, 10)), norm(x), atol=1e-5, rtol=1e-5)
