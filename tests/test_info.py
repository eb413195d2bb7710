"""describe_model_dir / format_info on the tiny native model, the reference folder's original checkpoints, a Hugging
Face folder, and broken copies of them; info agrees with what load_models accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.weights.info import ModelDirInfo, describe_model_dir, format_info
from tortoise_clvp.weights.model_dir import load_models

PARTS = ("autoregressive", "clvp", "diffusion", "vocoder")


def _loaded_counts(folder: Path) -> dict[str, int]:
    models = load_models(folder)
    return {part: sum(p.numel() for p in getattr(models, part).parameters()) for part in PARTS}


@pytest.fixture(scope="module")
def tiny_counts(tiny_model_dir) -> dict[str, int]:
    return _loaded_counts(tiny_model_dir)


@pytest.fixture(scope="module")
def original_counts(reference_model_dir) -> dict[str, int]:
    return _loaded_counts(reference_model_dir)


def _folder(layout: str, request) -> Path:
    """The tiny native model, or (parity fixture, skipped without the reference folder) the original-layout one."""
    return request.getfixturevalue("tiny_model_dir" if layout == "native" else "reference_model_dir")


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _all_good(info: ModelDirInfo, counts: dict[str, int]) -> None:
    assert info.problems == []
    assert info.stages == {"candidates": True, "audio": True}
    assert all(f.present and f.size for f in info.files if f.stage != "optional")
    assert info.parameters == counts
    assert all(info.models[part].ok for part in PARTS)


def test_original_layout(reference_model_dir, original_counts):
    info = describe_model_dir(reference_model_dir)
    assert info.layout == "tortoise"
    _all_good(info, original_counts)
    models = load_models(reference_model_dir)
    for part in PARTS:
        assert info.configs[part] == getattr(models, part).config.to_dict()
    # the file stores more than the model keeps: the AR text head, the vocoder's weight-norm gains
    assert info.models["autoregressive"].stored_elements > original_counts["autoregressive"]
    assert info.models["vocoder"].stored_elements > original_counts["vocoder"]
    assert info.file("autoregressive.pth").size == (reference_model_dir / "autoregressive.pth").stat().st_size
    text = format_info(info)
    for needle in ("tortoise", "autoregressive.pth", "vocoder.pth", f"{original_counts['clvp']:,}", "candidates", "usable"):
        assert needle in text
    assert "unusable" not in text and "MISSING" not in text


def test_native_layout(tiny_model_dir, tiny_counts):
    info = describe_model_dir(tiny_model_dir)
    assert info.layout == "native"
    _all_good(info, tiny_counts)
    models = load_models(tiny_model_dir)
    for part in PARTS:  # ours store exactly the model's tensors
        assert info.models[part].stored_elements == tiny_counts[part]
        assert info.models[part].dtypes == ("float32",)
        assert info.configs[part] == getattr(models, part).config.to_dict()
    assert "native" in format_info(info) and "MISSING" not in format_info(info)


def test_the_models_are_checked_on_the_meta_device(tiny_model_dir, monkeypatch):
    """info builds each model from the files' shapes alone: reading tensor data would fail here."""
    from safetensors import safe_open

    def no_data(*args, **kwargs):
        raise AssertionError("describe_model_dir read tensor data")

    with safe_open(str(tiny_model_dir / "clvp.safetensors"), framework="pt") as handle:
        monkeypatch.setattr(type(handle), "get_tensor", no_data)
    info = describe_model_dir(tiny_model_dir)
    assert info.problems == [] and all(info.models[part].ok for part in PARTS)


@pytest.mark.parametrize("layout", ["tortoise", "native"])
def test_missing_vocoder_blocks_audio_only(tmp_path, layout, request):
    if layout == "tortoise":
        folder = _copy(_folder(layout, request), tmp_path)
        (folder / "vocoder.pth").unlink()
        missing = "vocoder.pth"
    else:  # a native folder converted without a vocoder
        from tortoise_clvp.weights import native

        source = _folder(layout, request)
        models = load_models(source)
        parts = {part: getattr(models, part) for part in ("autoregressive", "clvp", "diffusion")}
        folder = native.save_native(tmp_path / "native", parts, source)
        missing = "vocoder.safetensors"
    info = describe_model_dir(folder)
    assert info.file(missing).present is False
    assert info.stages == {"candidates": True, "audio": False}
    assert f"{missing} missing" in info.blockers["audio"] and info.blockers["candidates"] == []
    assert info.problems == []
    assert load_models(folder).vocoder is None  # what info promised: candidates load
    text = format_info(info)
    assert "MISSING" in text and "audio       unusable" in text


@pytest.mark.parametrize("layout, name", [("tortoise", "clvp2.pth"), ("tortoise", "diffusion_decoder.pth"),
                                          ("native", "tokenizer.json"), ("native", "diffusion.safetensors")])
def test_corrupt_file_is_a_problem_not_an_exception(tmp_path, layout, name, request):
    folder = _copy(_folder(layout, request), tmp_path)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 3])  # truncated
    info = describe_model_dir(folder)
    assert any(name in problem for problem in info.problems)
    assert info.stages["audio"] is False
    # load_models reads every file present, so any broken file stops the candidates stage too
    assert info.stages["candidates"] is False
    with pytest.raises(CheckpointError):
        load_models(folder)
    assert "Problems:" in format_info(info)


def test_corrupt_native_safetensors_is_a_problem(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    data = (folder / "clvp.safetensors").read_bytes()
    (folder / "clvp.safetensors").write_bytes(data[:-100])
    info = describe_model_dir(folder)
    assert any("clvp.safetensors" in problem for problem in info.problems)
    assert info.stages == {"candidates": False, "audio": False}
    assert info.models["autoregressive"].ok and not info.models["clvp"].ok


def test_file_in_the_wrong_slot_is_named(reference_model_dir, tmp_path):
    folder = _copy(reference_model_dir, tmp_path)
    shutil.copyfile(folder / "vocoder.pth", folder / "diffusion_decoder.pth")
    info = describe_model_dir(folder)
    assert any("diffusion_decoder.pth is not a diffusion decoder checkpoint" in p and "vocoder" in p
               for p in info.problems)
    assert not info.models["diffusion"].ok and info.models["vocoder"].ok


def test_a_model_its_loader_refuses_is_unreadable(tiny_model_dir, tmp_path):
    """A well-formed file of the wrong sizes: info says so exactly when load_models refuses it."""
    from safetensors.torch import save_file

    folder = _copy(tiny_model_dir, tmp_path)
    state = load_models(folder).clvp.state_dict()
    state["temperature"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "clvp.safetensors"))
    info = describe_model_dir(folder)
    assert not info.models["clvp"].ok and info.models["clvp"].present
    assert any("temperature [2]" in problem for problem in info.problems)
    assert info.stages == {"candidates": False, "audio": False}
    with pytest.raises(CheckpointError, match=r"temperature \[2\]"):
        load_models(folder)


def test_parts_that_do_not_fit_are_reported(tiny_model_dir, tmp_path):
    from tortoise_clvp.config import DiffusionConfig
    from tortoise_clvp.models.diffusion import DiffusionModel
    from tortoise_clvp.weights import native

    models = load_models(tiny_model_dir)
    torch.manual_seed(0)
    wide = DiffusionModel(DiffusionConfig(model_channels=32, num_layers=1, num_heads=2, in_latent_channels=48))
    parts = {"autoregressive": models.autoregressive, "clvp": models.clvp, "diffusion": wide, "vocoder": models.vocoder}
    folder = native.save_native(tmp_path / "misfit", parts, tiny_model_dir)
    info = describe_model_dir(folder)
    assert all(info.models[part].ok for part in PARTS)
    assert any("latents" in problem for problem in info.problems)
    assert info.stages == {"candidates": False, "audio": False}


def test_folder_without_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    info = describe_model_dir(tmp_path)
    assert info.layout is None and info.stages == {"candidates": False, "audio": False}
    assert info.problems and "holds no model" in info.problems[0]
    assert not any(f.present for f in info.files)
    assert "not recognised" in format_info(info)


def test_non_existent_path_and_file_raise(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        describe_model_dir(tmp_path / "missing")
    (tmp_path / "file.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not a model directory"):
        describe_model_dir(tmp_path / "file.pth")


def test_huggingface_layout(tmp_path, tiny_model_dir):
    transformers = pytest.importorskip("transformers")
    config = transformers.ClvpConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, projection_dim=32, num_hidden_layers=1, num_attention_heads=1),
        speech_config=dict(hidden_size=64, intermediate_size=128, projection_dim=32, num_hidden_layers=1,
                           num_attention_heads=1, vocab_size=8192),
        decoder_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, max_text_tokens=40,
                            max_position_embeddings=70),
    )
    torch.manual_seed(0)
    folder = tmp_path / "hf"
    transformers.ClvpModelForConditionalGeneration(config).save_pretrained(folder)
    for name in ("tokenizer.json", "mel_norms.pth"):
        shutil.copyfile(tiny_model_dir / name, folder / name)
    info = describe_model_dir(folder)
    assert info.layout == "huggingface" and info.problems == []
    assert info.stages == {"candidates": True, "audio": False}
    models = load_models(folder)
    for part in ("autoregressive", "clvp"):
        assert info.parameters[part] == sum(p.numel() for p in getattr(models, part).parameters())
    assert info.configs["autoregressive"]["model_dim"] == 32
