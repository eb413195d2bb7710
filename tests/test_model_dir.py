"""Model directories: layout detection, the native format round trip, the Hugging Face layout, bad folders.

Product cases use the tiny native model; the original-layout cases use the reference folder's original checkpoints
(`reference_model_dir`, skipped without the folder)."""

from __future__ import annotations

import shutil

import pytest
import torch

from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.weights import native
from tortoise_clvp.weights.model_dir import convert, detect_layout, load_models

transformers = pytest.importorskip("transformers")


def _same_outputs(a, b):
    text = torch.randint(3, 200, (2, 9))
    codes = torch.randint(0, 8000, (2, 15))
    mel = torch.randn(1, 2, 80, 40)
    with torch.no_grad():
        torch.testing.assert_close(a.clvp.similarity(text, codes), b.clvp.similarity(text, codes))
        torch.testing.assert_close(a.autoregressive.get_conditioning(mel), b.autoregressive.get_conditioning(mel))
        latent = torch.randn(2, a.autoregressive.config.model_dim)
        torch.testing.assert_close(a.autoregressive.speech_latents(latent, text, codes), b.autoregressive.speech_latents(latent, text, codes))


def test_convert_to_native_round_trip(reference_model_dir, tmp_path):
    original = load_models(reference_model_dir)
    assert original.layout == "tortoise"
    written = convert(reference_model_dir, tmp_path / "native")
    converted = load_models(written)
    assert converted.layout == "native" and detect_layout(written) == "native"
    _same_outputs(original, converted)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder may be left behind"


def test_convert_refuses_existing_destination_and_overwrites_on_request(tiny_model_dir, tmp_path):
    destination = tmp_path / "native"
    destination.mkdir()
    (destination / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists"):
        convert(tiny_model_dir, destination)
    assert (destination / "keep.txt").read_text() == "mine"
    convert(tiny_model_dir, destination, overwrite=True)
    assert (destination / native.CONFIG_FILE).is_file() and not (destination / "keep.txt").exists()


def test_huggingface_layout_loads(tmp_path, tiny_model_dir):
    config = transformers.ClvpConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, projection_dim=32, num_hidden_layers=1, num_attention_heads=1),
        speech_config=dict(hidden_size=64, intermediate_size=128, projection_dim=32, num_hidden_layers=1, num_attention_heads=1, vocab_size=8192),
        decoder_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, max_text_tokens=40, max_position_embeddings=70),
    )
    torch.manual_seed(0)
    hf = transformers.ClvpModelForConditionalGeneration(config)
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    for name in ("tokenizer.json", "mel_norms.pth"):
        shutil.copyfile(tiny_model_dir / name, folder / name)
    models = load_models(folder)
    assert models.layout == "huggingface"
    assert models.autoregressive.config.model_dim == 32 and models.clvp.config.dim_text == 64
    written = convert(folder, tmp_path / "native")
    _same_outputs(models, load_models(written))


def test_bad_directories_are_clear_errors(tmp_path, tiny_model_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_models(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="holds no model"):
        load_models(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_models(partial)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / native.weights_file("clvp")).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_models(broken)
    listed = tmp_path / "listed"
    shutil.copytree(tiny_model_dir, listed)
    (listed / native.weights_file("vocoder")).unlink()  # tortoise_clvp.json still lists it
    with pytest.raises(CheckpointError, match="vocoder.safetensors is missing"):
        load_models(listed)


def test_an_original_file_in_the_wrong_slot_is_named(tmp_path, reference_model_dir):
    swapped = tmp_path / "swapped"
    shutil.copytree(reference_model_dir, swapped)
    shutil.copyfile(reference_model_dir / "autoregressive.pth", swapped / "clvp2.pth")
    with pytest.raises(CheckpointError, match="clvp2.pth is not a CLVP checkpoint.*autoregressive"):
        load_models(swapped)
    (swapped / "clvp2.pth").unlink()
    with pytest.raises(CheckpointError, match="lacks clvp2.pth"):
        load_models(swapped)


def test_float16_storage_loads_in_the_working_dtype(tmp_path, tiny_model_dir):
    """A native part stored in float16 (as an export may) comes back float32, or in the dtype asked for."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "half"
    shutil.copytree(tiny_model_dir, folder)
    for part in ("autoregressive", "diffusion"):
        file = folder / native.weights_file(part)
        save_file({k: v.half() for k, v in load_file(str(file)).items()}, str(file))
    full, half = load_models(tiny_model_dir), load_models(folder)
    for part in ("autoregressive", "diffusion"):
        for (name, a), (_, b) in zip(getattr(full, part).state_dict().items(), getattr(half, part).state_dict().items()):
            assert b.dtype == torch.float32, name
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)
    assert next(load_models(folder, dtype=torch.bfloat16).autoregressive.parameters()).dtype == torch.bfloat16


def test_saving_in_float16_halves_the_parameters_and_keeps_buffers(tmp_path, tiny_assets):
    from conftest import tiny_parts
    from safetensors import safe_open

    parts = tiny_parts()
    folder = native.save_native(tmp_path / "half", parts, tiny_assets, storage_dtype=torch.float16)
    for part, model in parts.items():
        parameters = dict(model.named_parameters())
        with safe_open(str(folder / native.weights_file(part)), "pt") as stored:
            for key in stored.keys():
                assert stored.get_tensor(key).dtype == (torch.float16 if key in parameters else torch.float32), key
    loaded = load_models(folder)
    parameters = dict(parts["diffusion"].named_parameters())
    for (name, a), b in zip(loaded.diffusion.state_dict().items(), parts["diffusion"].state_dict().values()):
        assert a.dtype == torch.float32 and torch.equal(a, b.half().float() if name in parameters else b)
    with pytest.raises(CheckpointError, match="float32 or float16"):
        native.save_native(tmp_path / "bf16", parts, tiny_assets, storage_dtype=torch.bfloat16)


def test_parts_from_different_sizes_are_refused(tmp_path):
    from tortoise_clvp.config import (
        AutoregressiveConfig,
        DiffusionConfig,
        VocoderConfig,
    )
    from tortoise_clvp.models.autoregressive import AutoregressiveModel
    from tortoise_clvp.models.diffusion import DiffusionModel
    from tortoise_clvp.models.vocoder import UnivNetVocoder
    from tortoise_clvp.weights.model_dir import check_parts_fit

    with torch.device("meta"):
        ar = AutoregressiveModel(AutoregressiveConfig(layers=1, model_dim=64, heads=4))
        diffusion = DiffusionModel(DiffusionConfig(model_channels=64, num_layers=1, num_heads=4, in_latent_channels=128))
        vocoder = UnivNetVocoder(VocoderConfig(mel_channels=80))
        fitting = DiffusionModel(DiffusionConfig(model_channels=64, num_layers=1, num_heads=4, in_latent_channels=64))
    with pytest.raises(CheckpointError, match="128-wide latents.*64-wide"):
        check_parts_fit(ar, diffusion, None, tmp_path)
    with pytest.raises(CheckpointError, match="80-band mels.*100-band"):
        check_parts_fit(ar, fitting, vocoder, tmp_path)
    check_parts_fit(ar, fitting, None, tmp_path)


@pytest.mark.parametrize("source", ["tiny_model_dir", "reference_model_dir"])
def test_native_round_trip_keeps_the_waveform_models(source, tmp_path, request):
    source = request.getfixturevalue(source)
    original = load_models(source)
    converted = load_models(convert(source, tmp_path / "native"))
    assert converted.diffusion is not None and converted.vocoder is not None
    for a, b in ((original.diffusion, converted.diffusion), (original.vocoder, converted.vocoder)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


def test_a_native_folder_names_the_preset_it_runs_with(tmp_path, tiny_assets, speech_clips):
    """`default_preset` in tortoise_clvp.json is what `generate` uses when given no options; a folder without it
    runs with the package's default; an unknown name is refused when writing and when reading."""
    import json

    from conftest import tiny_parts

    from tortoise_clvp import TextToSpeech
    from tortoise_clvp.presets import DEFAULT_PRESET, preset

    parts = tiny_parts()
    plain = native.save_native(tmp_path / "plain", parts, tiny_assets)
    assert "default_preset" not in json.loads((plain / native.CONFIG_FILE).read_text())
    assert load_models(plain).default_preset is None
    assert TextToSpeech(load_models(plain)).default_preset == DEFAULT_PRESET
    named = native.save_native(tmp_path / "named", parts, tiny_assets, default_preset="ultra_fast_ddim")
    tts = TextToSpeech(load_models(named))
    assert load_models(named).default_preset == tts.default_preset == "ultra_fast_ddim" != DEFAULT_PRESET
    assert tts.check_generation([speech_clips["mono_22k"]], None) == preset("ultra_fast_ddim")
    assert load_models(convert(named, tmp_path / "converted")).default_preset == "ultra_fast_ddim"
    with pytest.raises(CheckpointError, match="unknown default preset 'turbo'"):
        native.save_native(tmp_path / "bad", parts, tiny_assets, default_preset="turbo")
    meta = json.loads((named / native.CONFIG_FILE).read_text())
    (named / native.CONFIG_FILE).write_text(json.dumps({**meta, "default_preset": "turbo"}))
    with pytest.raises(CheckpointError, match="default preset 'turbo'.*upgrade"):
        load_models(named)
