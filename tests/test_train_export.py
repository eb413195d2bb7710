"""The export stage: a native model folder that TextToSpeech loads and samples candidates from, with the DVAE its
codebook comes from and a model card of the measured metrics; a finished, current export is left as it is, and
one older than a stage's best weights is redone. Fine-tuning
from an export (`--init`) keeps its tokenizer, mel norms, codebook and sizes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from train_work_dir import make_work_dir, no_progress, prepared_work_dir

from tortoise_clvp import TextToSpeech
from tortoise_clvp.config import VocoderConfig
from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.models.vocoder import UnivNetVocoder
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.train.autoregressive import load_decoder
from tortoise_clvp.train.clvp import load_scorer
from tortoise_clvp.train.codes import load_codes, load_dvae
from tortoise_clvp.train.config import EXPORT_DIR, TOKENIZER_DIR, VOCODER_DIR, RecipeConfig
from tortoise_clvp.train.export import MODEL_CARD_FILE, load_exported_dvae, run_export
from tortoise_clvp.train.loop import config_file, weights_file
from tortoise_clvp.train.recipe import run_stage

TRAINED = ("codes", "autoregressive", "clvp")


def test_the_export_loads_and_makes_candidates(tmp_path_factory, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(prepared_work_dir(tmp_path_factory, TRAINED), work)
    run_export(work, RecipeConfig.smoke(), no_progress)
    export = work / EXPORT_DIR
    tts = TextToSpeech.from_local(export)
    tokens = tts.models.autoregressive.config.tokens
    options = DecodingOptions(num_candidates=3, batch_size=3, max_new_tokens=20)
    result = tts.candidates("Hello, this is a test.", [work / "corpus" / "wavs_22k" / "v0_03.wav"], options, k=2, seed=3)
    assert result.raw_codes.shape == (3, 20) and int(result.raw_codes.max()) <= tokens.mel_stop
    assert int(result.ranked.codes.max()) < tokens.mel_start and len(result.latents) == 2
    exported, trained = load_exported_dvae(export), load_dvae(work)
    parameters = dict(trained.named_parameters())  # stored in float16; buffers in float32
    for (name, a), b in zip(exported.state_dict().items(), trained.state_dict().values()):
        assert a.dtype == torch.float32 and torch.equal(a, b.half().float() if name in parameters else b)
    stored = safe_open(str(export / "autoregressive.safetensors"), "pt")
    assert {stored.get_tensor(key).dtype for key in stored.keys()} >= {torch.float16}
    card = (export / MODEL_CARD_FILE).read_text()
    assert "--smoke" in card and "perplexity" in card and "R@1" in card and "voice0" in card
    assert tts.default_preset == RecipeConfig.smoke().export.default_preset == "ultra_fast_ddim"
    assert "Default preset: `ultra_fast_ddim`" in card
    before = (export / MODEL_CARD_FILE).stat().st_mtime_ns
    run_export(work, RecipeConfig.smoke(), no_progress)
    assert (export / MODEL_CARD_FILE).stat().st_mtime_ns == before
    # a vocoder trained after the export (as part 2's stage leaves its best weights): the next export adds it
    vocoder = UnivNetVocoder(VocoderConfig(noise_dim=8, channel_size=4, dilations=(1,), kpnet_hidden_channels=8))
    (work / VOCODER_DIR).mkdir()
    save_file(vocoder.state_dict(), str(weights_file(work / VOCODER_DIR, "vocoder")))
    config_file(work / VOCODER_DIR, "vocoder").write_text(json.dumps(vocoder.config.to_dict()))
    run_export(work, RecipeConfig.smoke(), no_progress)
    assert TextToSpeech.from_local(export).models.vocoder is not None and (export / MODEL_CARD_FILE).is_file()
    # a stage trained on (new best weights after the export): the next export takes them
    before = (export / MODEL_CARD_FILE).stat().st_mtime_ns
    with torch.no_grad():
        next(vocoder.parameters()).add_(1.0)
    save_file(vocoder.state_dict(), str(weights_file(work / VOCODER_DIR, "vocoder")))
    run_export(work, RecipeConfig.smoke(), no_progress)
    assert (export / MODEL_CARD_FILE).stat().st_mtime_ns > before
    reloaded = TextToSpeech.from_local(export).models.vocoder
    torch.testing.assert_close(next(reloaded.parameters()), next(vocoder.parameters()).half().float())


def test_fine_tuning_from_an_export_keeps_its_tokenizer_codebook_and_sizes(tmp_path_factory, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(prepared_work_dir(tmp_path_factory, TRAINED), base)
    run_export(base, RecipeConfig.smoke(), no_progress)
    export = base / EXPORT_DIR
    tuned = make_work_dir(tmp_path / "tuned")
    shutil.rmtree(tuned / TOKENIZER_DIR)  # as the corpus stage leaves it: the tokenizer stage is still to run
    config = replace(RecipeConfig.smoke(), init_dir=export)
    for stage in (*("tokenizer",), *TRAINED, "export"):
        run_stage(stage, tuned, config, no_progress)
    for name in ("tokenizer.json", "mel_norms.pth"):
        assert (tuned / TOKENIZER_DIR / name).read_bytes() == (export / name).read_bytes()
    assert load_codes(tuned).summary["dvae"].startswith("reused")
    original = TextToSpeech.from_local(export).models
    dropout = config.autoregressive.model.dropout
    assert load_decoder(tuned).config == replace(original.autoregressive.config, dropout=dropout)
    assert load_scorer(tuned).config == original.clvp.config
    assert TextToSpeech.from_local(tuned / EXPORT_DIR).models.autoregressive.config.tokens == original.autoregressive.config.tokens
    shutil.rmtree(tuned / EXPORT_DIR)
    with pytest.raises(CheckpointError, match="same --init"):  # its codes came from the init model's DVAE
        run_export(tuned, RecipeConfig.smoke(), no_progress)


def test_the_export_names_only_a_known_preset():
    from tortoise_clvp.train.config import ExportConfig

    assert ExportConfig().default_preset == "ultra_fast_ddim"
    with pytest.raises(ValueError, match="unknown default preset 'turbo'"):
        ExportConfig(default_preset="turbo")
