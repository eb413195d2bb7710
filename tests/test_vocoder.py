"""UnivNet vocoder: golden parity with the original (models/vocoder_tiny, pipeline_tiny stage s9), every accepted
weight layout, full-size key coverage on the meta device, and clear errors for bad files and bad mels.

Every size comes from the reference folder's JSON, so another folder (CLVP_REFERENCE_DIR) with other sizes or seeds
runs the same tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_json, read_tensors

from tortoise_clvp.config import VocoderConfig
from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.models.vocoder import (
    AUDIO_LIMIT,
    INFERENCE_PAD_FRAMES,
    INFERENCE_PAD_VALUE,
    UnivNetVocoder,
)
from tortoise_clvp.weights.original_vocoder import (
    GENERATOR_ENTRY,
    PARAMETRIZED_KEYS,
    WEIGHT_NORM_KEYS,
    fold_weight_norm,
    load_vocoder_original,
    vocoder_config_from_original_kwargs,
    vocoder_config_from_state,
    vocoder_key_map,
    vocoder_state_from_original,
)
from tortoise_clvp.weights.strict import read_torch_checkpoint

TOL = dict(atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: the tiny original checkpoint
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocoder_dir(reference_dir):
    return reference_dir / "models" / "vocoder_tiny"


@pytest.fixture(scope="module")
def meta(vocoder_dir) -> dict:
    return read_json(vocoder_dir / "config.json")


@pytest.fixture(scope="module")
def tiny_config(meta) -> VocoderConfig:
    return vocoder_config_from_original_kwargs(meta["kwargs"])


@pytest.fixture(scope="module")
def wrapped_state(vocoder_dir) -> dict:
    """vocoder.pth as read: {'model_g': state dict with weight_g / weight_v pairs}."""
    return read_torch_checkpoint(vocoder_dir / "vocoder.pth")


@pytest.fixture(scope="module")
def tiny_model(vocoder_dir, tiny_config) -> UnivNetVocoder:
    return load_vocoder_original(vocoder_dir / "vocoder.pth", tiny_config)


@pytest.fixture(scope="module")
def cases(vocoder_dir) -> dict[str, torch.Tensor]:
    return read_tensors(vocoder_dir / "cases.safetensors")


def _padded(mel: torch.Tensor) -> torch.Tensor:
    pad = torch.full((mel.shape[0], mel.shape[1], INFERENCE_PAD_FRAMES), INFERENCE_PAD_VALUE)
    return torch.cat([mel, pad], dim=2)


# ---------------------------------------------------------------------------------------------------------------
# Golden parity
# ---------------------------------------------------------------------------------------------------------------


def test_inference_constants_match_the_original(reference_dir):
    recorded = read_json(reference_dir / "tortoise" / "constants.json")["vocoder"]
    assert INFERENCE_PAD_FRAMES == recorded["inference_pad_frames"]
    assert INFERENCE_PAD_VALUE == recorded["inference_pad_value"]
    assert [-AUDIO_LIMIT, AUDIO_LIMIT] == recorded["clamp"]
    assert VocoderConfig.RELEASED.noise_dim == recorded["noise_dim"]
    assert VocoderConfig.RELEASED.hop_length == recorded["hop_length"]


def test_config_read_from_shapes_matches_constructor_kwargs(wrapped_state, tiny_config):
    assert vocoder_config_from_state(wrapped_state) == tiny_config
    assert vocoder_config_from_state(wrapped_state[GENERATOR_ENTRY]) == tiny_config


def test_parameter_count_matches_the_original(meta, tiny_model, wrapped_state):
    """The recorded count includes the weight-norm gains; folding removes exactly those."""
    gains = sum(v.numel() for k, v in wrapped_state[GENERATOR_ENTRY].items() if k.endswith(WEIGHT_NORM_KEYS[0]))
    assert sum(p.numel() for p in tiny_model.parameters()) == meta["n_params"] - gains


@torch.inference_mode()
def test_golden_inference_with_recorded_noise(tiny_model, cases):
    out = tiny_model.inference(cases["in.mel"], z=cases["in.z"])
    torch.testing.assert_close(out, cases["out.inference"], **TOL)
    # the original before remove_weight_norm: the same function of the same weights
    torch.testing.assert_close(out, cases["out.inference_weight_norm"], **TOL)


@torch.inference_mode()
def test_golden_raw_forward_on_the_padded_mel(tiny_model, cases):
    out = tiny_model(_padded(cases["in.mel"]), cases["in.z"])
    torch.testing.assert_close(out, cases["out.forward_padded"], **TOL)


@torch.inference_mode()
def test_inference_shapes_trimming_and_clamp(tiny_model, tiny_config, cases):
    mel, z = cases["in.mel"], cases["in.z"]
    frames = mel.shape[2]
    assert z.shape == (mel.shape[0], tiny_config.noise_dim, frames + INFERENCE_PAD_FRAMES)
    out = tiny_model.inference(mel, z=z)
    assert out.shape == (mel.shape[0], 1, frames * tiny_config.hop_length)
    assert out.abs().max() <= AUDIO_LIMIT
    raw = tiny_model(_padded(mel), z)
    torch.testing.assert_close(out, raw[:, :, : out.shape[2]].clamp(-AUDIO_LIMIT, AUDIO_LIMIT))


@torch.inference_mode()
def test_generator_draws_the_noise_like_torch_randn(tiny_model, tiny_config, cases):
    mel, seed = cases["in.mel"], 1234
    z = torch.randn(
        mel.shape[0], tiny_config.noise_dim, mel.shape[2] + INFERENCE_PAD_FRAMES,
        generator=torch.Generator().manual_seed(seed),
    )
    drawn = tiny_model.inference(mel, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(drawn, tiny_model.inference(mel, z=z), rtol=0, atol=0)
    torch.manual_seed(seed)  # no generator: the global RNG, as the original
    torch.testing.assert_close(tiny_model.inference(mel), drawn, rtol=0, atol=0)


@torch.inference_mode()
def test_batched_rows_equal_single_rows(tiny_model, cases):
    mel, z = cases["in.mel"], cases["in.z"]
    mels = torch.cat([mel, mel.flip(2)])
    zs = torch.cat([z, z.flip(2)])
    both = tiny_model.inference(mels, z=zs)
    for row in range(2):
        single = tiny_model.inference(mels[row : row + 1], z=zs[row : row + 1])
        torch.testing.assert_close(both[row : row + 1], single, **TOL)


@pytest.fixture(scope="module")
def pipeline(reference_dir):
    folder = reference_dir / "pipeline_tiny"
    return read_json(folder / "config.json"), read_tensors(folder / "cases.safetensors")


@torch.inference_mode()
def test_pipeline_stage_s9(pipeline, tiny_model, tiny_config):
    """pipeline_tiny's s9 is vocoder_tiny's weights on the s8 mel: noise from torch.manual_seed(s9_seed)."""
    config, tensors = pipeline
    if not any(name.startswith("s9.") for name in tensors):
        pytest.skip("this pipeline fixture has no vocoder stage (s9)")
    for cand, seed in enumerate(config["s9_seeds"]):
        mel, z, wav = (tensors[f"s{stage}.cand{cand}.{name}"] for stage, name in ((8, "mel"), (9, "z"), (9, "wav")))
        assert z.shape == (mel.shape[0], tiny_config.noise_dim, mel.shape[2] + INFERENCE_PAD_FRAMES)
        torch.testing.assert_close(tiny_model.inference(mel, z=z), wav, **TOL)
        # the noise really is the seed's first draw, so the seeded path reproduces the wav too
        torch.testing.assert_close(tiny_model.inference(mel, generator=torch.Generator().manual_seed(seed)), wav, **TOL)


# ---------------------------------------------------------------------------------------------------------------
# Weight layouts: wrapper / bare / plain weights / parametrizations
# ---------------------------------------------------------------------------------------------------------------


def _weight_norm_removed_by_torch(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the original's remove_weight_norm leaves: plain `weight`, computed by torch's own _weight_norm."""
    plain = {}
    for key, value in state.items():
        if key.endswith(WEIGHT_NORM_KEYS[0]):
            prefix = key[: -len(WEIGHT_NORM_KEYS[0])]
            plain[f"{prefix}weight"] = torch._weight_norm(state[f"{prefix}{WEIGHT_NORM_KEYS[1]}"], value, 0)
        elif not key.endswith(WEIGHT_NORM_KEYS[1]):
            plain[key] = value
    return plain


def _parametrized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights as torch.nn.utils.parametrizations.weight_norm would save them."""
    renamed = dict(zip(WEIGHT_NORM_KEYS, PARAMETRIZED_KEYS))
    out = {}
    for key, value in state.items():
        prefix, _, last = key.rpartition(".")
        out[f"{prefix}.{renamed[last]}" if last in renamed else key] = value
    return out


def test_every_weight_layout_loads_to_the_same_model(wrapped_state, tiny_model, tiny_config):
    bare = wrapped_state[GENERATOR_ENTRY]
    want = tiny_model.state_dict()
    for layout in (wrapped_state, bare, _weight_norm_removed_by_torch(bare), _parametrized(bare)):
        got = load_vocoder_original(layout).state_dict()  # config read from the shapes
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7)


def test_fold_matches_torch_weight_norm_including_transposed_convs(wrapped_state):
    bare = wrapped_state[GENERATOR_ENTRY]
    upsample = next(k[: -len(".weight_g")] for k in bare if ".convt_pre." in k and k.endswith(".weight_g"))
    g, v = bare[f"{upsample}.weight_g"], bare[f"{upsample}.weight_v"]
    torch.testing.assert_close(fold_weight_norm(g, v), torch._weight_norm(v, g, 0), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="does not fit"):
        fold_weight_norm(g.reshape(1, -1, 1), v)


# ---------------------------------------------------------------------------------------------------------------
# Full size on the meta device (keys/vocoder.json)
# ---------------------------------------------------------------------------------------------------------------


def test_full_size_keys_all_map(reference_dir):
    listing = read_json(reference_dir / "keys" / "vocoder.json")
    state = {item["key"]: torch.empty(item["shape"], device="meta") for item in listing["keys"]}
    assert len(state) == listing["n_tensors"]
    config = vocoder_config_from_original_kwargs(listing["kwargs"])
    assert vocoder_config_from_state(state, "vocoder.json") == config
    mapped = vocoder_state_from_original({GENERATOR_ENTRY: state}, config)
    with torch.device("meta"):
        model = UnivNetVocoder(config)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(vocoder_key_map(config)) == {k.replace("weight_v", "weight") for k in state if not k.endswith("_g")}
    # parameter counts: with weight norm (the file) and after folding (the module)
    with_norm = sum(math.prod(item["shape"]) for item in listing["keys"])
    gains = sum(math.prod(item["shape"]) for item in listing["keys"] if item["key"].endswith(WEIGHT_NORM_KEYS[0]))
    folded = sum(p.numel() for p in model.parameters())
    assert with_norm == listing["n_parameters"]
    assert folded == with_norm - gains
    if config == VocoderConfig.RELEASED:  # the README's figures: 14.9 M, 14.79 M after removing weight norm
        assert round(with_norm / 1e6, 1) == 14.9 and round(folded / 1e6, 2) == 14.79
    loaded = load_vocoder_original({GENERATOR_ENTRY: state})  # strict load of meta tensors, config from shapes
    assert loaded.config == config


# ---------------------------------------------------------------------------------------------------------------
# Bad files and bad inputs
# ---------------------------------------------------------------------------------------------------------------


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_vocoder_original(tmp_path / "vocoder.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_vocoder_original(corrupt)


def test_wrong_slot_is_named(reference_dir):
    with pytest.raises(CheckpointError, match="autoregressive") as excinfo:
        load_vocoder_original(reference_dir / "models" / "ar_tiny" / "autoregressive.pth")
    assert "vocoder" in str(excinfo.value)
    with pytest.raises(CheckpointError, match="no 'model_g'"):
        load_vocoder_original({"model_d": {"x": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="no tensors"):
        load_vocoder_original({})


def test_missing_extra_and_misshaped_keys_are_listed(wrapped_state, tiny_config):
    bare = dict(wrapped_state[GENERATOR_ENTRY])
    victim = next(k for k in bare if k.endswith(".conv_blocks.0.1.weight_v"))
    gain = victim.replace("weight_v", "weight_g")
    bare[victim] = bare[victim][:, :-1]
    bare["surprise.weight"] = torch.zeros(1)
    del bare["conv_post.1.bias"]
    bare[gain] = bare[gain].reshape(1, -1, 1)
    with pytest.raises(CheckpointError) as excinfo:
        load_vocoder_original(bare, tiny_config)
    message = str(excinfo.value)
    assert "missing keys (1): conv_post.1.bias" in message
    assert "unexpected keys (1): surprise.weight" in message
    assert f"{victim} {list(bare[victim].shape)}" in message
    assert gain in message


def test_config_from_shapes_needs_the_size_keys(wrapped_state):
    bare = {k: v for k, v in wrapped_state[GENERATOR_ENTRY].items() if not k.startswith("conv_pre.")}
    bare["conv_pre.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="conv_pre.weight"):
        load_vocoder_original(bare)


@torch.inference_mode()
def test_bad_mels_and_noise_are_refused(tiny_model, tiny_config, cases):
    mel = cases["in.mel"]
    wrong_bands = torch.zeros(1, tiny_config.mel_channels + 1, mel.shape[2])
    with pytest.raises(ValueError, match=rf"\(batch, {tiny_config.mel_channels}, frames\)"):
        tiny_model.inference(wrong_bands)
    with pytest.raises(ValueError, match="shape"):
        tiny_model.inference(mel[0])  # no batch dim
    with pytest.raises(ValueError, match="empty mel"):
        tiny_model.inference(mel[:, :, :0])
    with pytest.raises(ValueError, match="noise z"):
        tiny_model.inference(mel, z=cases["in.z"][:, :, :-1])
    with pytest.raises(ValueError, match="not both"):
        tiny_model.inference(mel, generator=torch.Generator(), z=cases["in.z"])
