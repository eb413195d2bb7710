"""Loading the original autoregressive.pth: full-size key coverage, legacy buffers, and every bad-file case."""

from __future__ import annotations

import pytest
import torch
from conftest import read_json

from tortoise_clvp.config import AutoregressiveConfig
from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.models.autoregressive import AutoregressiveModel
from tortoise_clvp.weights.original_autoregressive import (
    autoregressive_config_from_original_kwargs,
    autoregressive_config_from_state,
    autoregressive_state_from_original,
    load_autoregressive_original,
)


@pytest.fixture(scope="module")
def tiny(reference_dir):
    folder = reference_dir / "models" / "ar_tiny"
    meta = read_json(folder / "config.json")
    state = torch.load(folder / "autoregressive.pth", weights_only=True)
    return folder, autoregressive_config_from_original_kwargs(meta["kwargs"]), state


def test_full_size_keys_all_map(reference_dir):
    """Every key of the released file (listed with shapes) maps onto the released-size model built on meta."""
    listing = read_json(reference_dir / "keys" / "autoregressive.json")
    config = autoregressive_config_from_original_kwargs(listing["kwargs"])
    assert config == AutoregressiveConfig.RELEASED
    state = {item["key"]: torch.empty(item["shape"], device="meta") for item in listing["keys"]}
    for item in listing["probable_extra_keys_in_released_file"]["keys"]:
        state[item["key"]] = torch.empty(item["shape"], device="meta")
    assert autoregressive_config_from_state(state) == config
    mapped = autoregressive_state_from_original(state, config)
    with torch.device("meta"):
        model = AutoregressiveModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    text_head = sum(torch.Size(i["shape"]).numel() for i in listing["keys"] if i["key"].startswith("text_head."))
    assert sum(p.numel() for p in model.parameters()) == listing["n_parameters"] - text_head


def test_legacy_gpt2_buffers_are_accepted(tiny, reference_dir):
    folder, config, state = tiny
    legacy = torch.load(folder / "legacy_gpt2_buffers.pth", weights_only=True)
    with_buffers = load_autoregressive_original({**state, **legacy}, config)
    plain = load_autoregressive_original(dict(state), config)
    for (name, a), (_, b) in zip(with_buffers.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def test_config_is_read_from_shapes_given_heads(tiny):
    _, config, state = tiny
    assert autoregressive_config_from_state(state, heads=config.heads) == config


def test_unknown_width_without_heads_asks_for_a_config(tiny):
    _, _, state = tiny
    with pytest.raises(CheckpointError, match="heads"):
        load_autoregressive_original(dict(state))


def test_missing_extra_and_misshaped_keys_are_listed(tiny):
    _, config, state = tiny
    broken = dict(state)
    del broken["final_norm.bias"]
    broken["surprise.weight"] = torch.zeros(1)
    broken["mel_head.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as info:
        load_autoregressive_original(broken, config)
    message = str(info.value)
    assert "missing keys (1): final_norm.bias" in message
    assert "unexpected keys (1): surprise.weight" in message
    assert "mel_head.bias [5]" in message


def test_wrong_slot_and_bad_files(tiny, reference_dir, tmp_path):
    _, config, _ = tiny
    with pytest.raises(CheckpointError, match="not an autoregressive checkpoint.*CLVP"):
        load_autoregressive_original(reference_dir / "models" / "clvp_tiny" / "clvp.pth", config)
    with pytest.raises(CheckpointError, match="not found"):
        load_autoregressive_original(tmp_path / "nope.pth", config)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_autoregressive_original(corrupt, config)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((reference_dir / "models" / "ar_tiny" / "autoregressive.pth").read_bytes()[:4000])
    with pytest.raises(CheckpointError):
        load_autoregressive_original(truncated, config)


def test_a_text_file_is_a_clear_error(tmp_path, tiny):
    _, config, _ = tiny
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_autoregressive_original(text, config)
