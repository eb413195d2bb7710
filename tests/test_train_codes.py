"""The codes stage: every utterance's mel cached once and encoded into codes of the right length, the calm code
measured, and a finished stage left as it is; conditioning mels are built from other clips of the voice."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from train_work_dir import no_progress, prepared_work_dir

from tortoise_clvp.frontend.mel import load_mel_norms
from tortoise_clvp.train.codes import codes_path, encode_mel, load_codes, load_dvae, run_codes
from tortoise_clvp.train.config import TOKENIZER_DIR, RecipeConfig
from tortoise_clvp.train.mel_cache import conditioning_frames, load_mel_cache, voice_conditioning
from tortoise_clvp.train.metadata import read_metadata


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return prepared_work_dir(tmp_path_factory, ("codes",))


def test_every_utterance_gets_one_code_per_four_mel_frames(work):
    utterances = read_metadata(work)
    codes = load_codes(work)
    mels = load_mel_cache(work, load_mel_norms(work / TOKENIZER_DIR / "mel_norms.pth"))
    assert codes.ids == mels.ids == [u.id for u in utterances]
    size = RecipeConfig.smoke().codes.model.codebook_size
    dvae = load_dvae(work)
    for index in range(len(utterances)):
        assert codes.length(index) == math.ceil(mels.length(index) / 4)
        assert torch.equal(codes.codes(index), encode_mel(dvae, mels.mel(index), mels.silence))
    assert codes.codebook_size == size and 0 <= codes.calm_code < size
    summary = codes.summary
    assert 1.0 <= summary["train_perplexity"] <= size and 0 < summary["valid"]["usage"] <= 1
    assert summary["valid"]["loss"] > 0 and summary["dvae"] == "trained"


def test_a_finished_stage_is_left_as_it_is(work, tmp_path):
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    before = codes_path(copy).stat().st_mtime_ns
    run_codes(copy, RecipeConfig.smoke(), no_progress)
    assert codes_path(copy).stat().st_mtime_ns == before


def test_conditioning_is_made_of_other_clips_cut_or_padded_to_six_seconds(work):
    mels = load_mel_cache(work, load_mel_norms(work / TOKENIZER_DIR / "mel_norms.pth"))
    generator = torch.Generator().manual_seed(0)
    single = voice_conditioning(mels, [3], clips=1, generator=generator)
    assert single.shape == (80, conditioning_frames()) == (80, 517)
    length = mels.length(3)
    assert torch.equal(single[:, :length], mels.mel(3))
    assert torch.equal(single[:, length:], mels.silence[:, None].expand(-1, 517 - length))
    with pytest.raises(ValueError, match="no other utterance"):
        voice_conditioning(mels, [], clips=2, generator=generator)
