"""The export stage: a native model folder that TextToSpeech loads and samples candidates from, with the DVAE its
codebook comes from and a model card of the measured metrics; a finished export is left as it is."""

from __future__ import annotations

import shutil

import torch
from train_work_dir import no_progress, prepared_work_dir

from tortoise_clvp import TextToSpeech
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.train.codes import load_dvae
from tortoise_clvp.train.config import EXPORT_DIR, RecipeConfig
from tortoise_clvp.train.export import MODEL_CARD_FILE, load_exported_dvae, run_export


def test_the_export_loads_and_makes_candidates(tmp_path_factory, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(prepared_work_dir(tmp_path_factory, ("codes", "autoregressive", "clvp")), work)
    run_export(work, RecipeConfig.smoke(), no_progress)
    export = work / EXPORT_DIR
    tts = TextToSpeech.from_local(export)
    tokens = tts.models.autoregressive.config.tokens
    options = DecodingOptions(num_candidates=3, batch_size=3, max_new_tokens=20)
    result = tts.candidates("Hello, this is a test.", [work / "corpus" / "wavs_22k" / "v0_03.wav"], options, k=2, seed=3)
    assert result.raw_codes.shape == (3, 20) and int(result.raw_codes.max()) <= tokens.mel_stop
    assert int(result.ranked.codes.max()) < tokens.mel_start and len(result.latents) == 2
    exported, trained = load_exported_dvae(export), load_dvae(work)
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), trained.state_dict().values()))
    card = (export / MODEL_CARD_FILE).read_text()
    assert "--smoke" in card and "perplexity" in card and "R@1" in card and "voice0" in card
    before = (export / MODEL_CARD_FILE).stat().st_mtime_ns
    run_export(work, RecipeConfig.smoke(), no_progress)
    assert (export / MODEL_CARD_FILE).stat().st_mtime_ns == before
