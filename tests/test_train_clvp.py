"""CLVP's training stage: candidates padded as the scorer sees them at inference, distinct sentences per batch, the
temperature clamp, and a short run that writes a loadable scorer with retrieval metrics."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import pytest
import torch
from train_work_dir import no_progress, prepared_work_dir

from tortoise_clvp.config import AutoregressiveConfig, ClvpConfig
from tortoise_clvp.models.clvp import ClvpModel
from tortoise_clvp.train.clvp import clamp_temperature, distinct_texts, load_scorer, padded_candidates, run_clvp
from tortoise_clvp.train.config import CLVP_DIR, RecipeConfig
from tortoise_clvp.train.loop import METRICS_FILE

TOKENS = AutoregressiveConfig(number_mel_codes=12, calm_code=2, fix_tail=(2, 2, 2)).tokens  # stop is 11


def test_candidates_are_padded_with_calm_codes_and_the_tail():
    rows = padded_candidates([torch.tensor([5, 6, 7]), torch.tensor([8])], 8, TOKENS)
    assert rows.tolist() == [[5, 6, 7, 2, 2, 2, 2, 2], [8, 2, 2, 2, 2, 2, 2, 2]]
    tailed = AutoregressiveConfig(number_mel_codes=12, calm_code=2, fix_tail=(4, 5, 6)).tokens
    assert padded_candidates([torch.tensor([5, 6, 7])], 8, tailed).tolist() == [[5, 6, 7, 2, 2, 4, 5, 6]]
    with pytest.raises(ValueError, match="does not fit"):
        padded_candidates([torch.tensor([5, 6, 7, 8, 9])], 8, TOKENS)


def test_the_scorer_is_set_to_score_within_the_padding_it_trains_on():
    settings = RecipeConfig().clvp
    assert 0 <= settings.model.score_padding <= settings.max_padding
    with pytest.raises(ValueError, match="score_padding"):
        replace(settings, max_padding=settings.model.score_padding - 1)
    with pytest.raises(ValueError, match="score_padding"):
        replace(settings, model=replace(settings.model, score_padding=None))


def test_a_batch_keeps_each_sentence_once():
    texts = [torch.tensor([1, 2, 0]), torch.tensor([3, 0]), torch.tensor([1, 2, 0])]
    assert distinct_texts([0, 1, 2], texts) == [0, 1]


def test_the_similarity_scale_is_clamped():
    clvp = ClvpModel(ClvpConfig(dim_text=8, dim_speech=8, dim_latent=8, text_enc_depth=1, text_heads=1,
                                speech_enc_depth=1, speech_heads=1, dim_head=8, rotary_dim=8, num_speech_tokens=10))
    with torch.no_grad():
        clvp.temperature.fill_(9.0)
    clamp_temperature(clvp, 100.0)
    assert clvp.temperature.exp().item() == pytest.approx(100.0)
    with torch.no_grad():
        clvp.temperature.fill_(-2.0)
    clamp_temperature(clvp, 100.0)
    assert clvp.temperature.item() == 0.0


def test_a_short_run_writes_a_scorer_and_its_retrieval_metrics(tmp_path_factory, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(prepared_work_dir(tmp_path_factory, ("codes",)), work)
    smoke = RecipeConfig.smoke()
    config = replace(smoke, clvp=replace(smoke.clvp, max_logit_scale=2.0))
    run_clvp(work, config, no_progress)
    scorer = load_scorer(work)
    assert scorer.config.num_speech_tokens == smoke.codes.model.codebook_size
    assert scorer.config.score_padding == smoke.clvp.model.score_padding  # inference lays candidates out as trained
    assert scorer.temperature.item() <= math.log(2.0) + 1e-6
    metrics = (work / CLVP_DIR / METRICS_FILE).read_text()
    assert '"text_to_speech_R@1"' in metrics and '"speech_to_text_R@1"' in metrics


def test_training_from_scratch_starts_at_the_initial_scale(tmp_path_factory, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(prepared_work_dir(tmp_path_factory, ("codes",)), work)
    smoke = RecipeConfig.smoke()
    reported = []
    run_clvp(work, replace(smoke, clvp=replace(smoke.clvp, initial_logit_scale=20.0)),
             lambda what, done, total, metrics: reported.append(metrics.get("logit_scale")))
    assert reported[0] == pytest.approx(20.0, rel=1e-2)  # after one small step from exp(log 20)
