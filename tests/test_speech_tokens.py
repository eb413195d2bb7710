"""Each decoder's own speech ids: released defaults unchanged; a custom codebook samples, fixes, trims and saves
with its own start, stop, calm code and tail."""

from __future__ import annotations

import pytest
import torch

from tortoise_clvp.config import TOKENS, AutoregressiveConfig, mel_start_stop
from tortoise_clvp.models.autoregressive import AutoregressiveModel
from tortoise_clvp.pipeline.decoding import DecodingOptions, sample_candidates
from tortoise_clvp.pipeline.sampling import SamplingOptions, initial_seen, next_tokens
from tortoise_clvp.pipeline.trimming import calm_trim_length, fix_speech_decoder_output, speech_lengths

CUSTOM = AutoregressiveConfig(layers=1, model_dim=16, heads=2, max_text_tokens=8, max_mel_tokens=20, number_mel_codes=34,
                              conditioning_attn_blocks=1, calm_code=3, fix_tail=(3, 3, 3))


def test_released_config_keeps_the_released_ids():
    assert AutoregressiveConfig.RELEASED.tokens == TOKENS
    assert (TOKENS.mel_start, TOKENS.mel_stop, TOKENS.calm, TOKENS.fix_tail) == (8192, 8193, 83, (45, 45, 248))
    assert mel_start_stop(AutoregressiveConfig.RELEASED.number_mel_codes) == (8192, 8193)


def test_custom_ids_come_from_the_config_and_round_trip_through_its_dict():
    tokens = CUSTOM.tokens
    assert (tokens.mel_start, tokens.mel_stop, tokens.calm, tokens.fix_tail) == (32, 33, 3, (3, 3, 3))
    assert (tokens.text_start, tokens.text_stop, tokens.space) == (TOKENS.text_start, TOKENS.text_stop, TOKENS.space)
    assert AutoregressiveConfig.from_dict(CUSTOM.to_dict()) == CUSTOM


@pytest.mark.parametrize("kwargs", [dict(calm_code=32), dict(fix_tail=(1, 40, 1)), dict(number_mel_codes=2), dict(dropout=1.0)])
def test_ids_outside_the_codebook_are_rejected(kwargs):
    with pytest.raises(ValueError):
        AutoregressiveConfig(**{**CUSTOM.to_dict(), **kwargs})


def test_sampling_bans_this_vocabularys_start_token():
    logits = torch.full((2, 34), -5.0)
    logits[:, 32] = 20.0  # the start token: most likely, never chosen
    logits[:, 33] = 10.0
    seen = initial_seen(2, 34, SamplingOptions(penalize_prompt_ids=True), torch.device("cpu"))
    assert seen[:, 32].all() and seen.sum() == 4
    greedy = SamplingOptions(do_sample=False, repetition_penalty=1.0)
    assert next_tokens(logits, seen, greedy).tolist() == [33, 33]
    assert (next_tokens(logits, seen, greedy, forbid_stop=True) < 32).all()


def test_a_custom_codebook_decodes_with_its_own_start_and_stop():
    torch.manual_seed(0)
    model = AutoregressiveModel(CUSTOM).eval()
    tokens = CUSTOM.tokens
    with torch.no_grad():
        model.mel_head.bias[tokens.mel_start] += 50.0  # the start token must never be sampled, however likely
        model.mel_head.bias[tokens.mel_stop] += 2.0
    options = DecodingOptions(num_candidates=6, batch_size=6, max_new_tokens=12)
    codes = sample_candidates(model, torch.randn(16), torch.tensor([5, 6, 0]), options, torch.Generator().manual_seed(3))
    assert codes.shape == (6, 12) and int(codes.max()) <= tokens.mel_stop
    assert not (codes == tokens.mel_start).any()
    stopped = (codes == tokens.mel_stop).int().cummax(dim=1).values.bool()  # every position from a row's first stop
    assert stopped.any() and (codes[stopped] == tokens.mel_stop).all()
    fixed = fix_speech_decoder_output(codes, tokens)
    assert int(fixed.max()) < tokens.mel_start  # only real codes are left for CLVP


def test_a_custom_codebook_fixes_and_trims_with_its_own_ids():
    tokens = CUSTOM.tokens
    codes = torch.tensor([[5, 6, 33, 33, 33, 33, 33, 33], [5, 6, 8, 9, 10, 11, 12, TOKENS.mel_stop]])
    fixed = fix_speech_decoder_output(codes, tokens)
    assert fixed.tolist() == [[5, 6, 3, 3, 3, 3, 3, 3], codes[1].tolist()]  # the released stop means nothing here
    assert speech_lengths(codes, tokens).tolist() == [2, 8]
    run = [3] * tokens.calm_run_to_trim
    assert calm_trim_length(torch.tensor([1, *run, 4]), tokens) == tokens.calm_run_to_trim
    assert calm_trim_length(torch.tensor([1, *[TOKENS.calm] * 12]), tokens) == 13


def test_dropout_acts_in_training_mode_only():
    model = AutoregressiveModel(AutoregressiveConfig(**{**CUSTOM.to_dict(), "dropout": 0.5}))
    args = (torch.randn(2, 16), torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 2, 3], [4, 5, 6]]))
    model.eval()
    first, second = model.teacher_forced(*args)[1], model.teacher_forced(*args)[1]
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model.teacher_forced(*args)[1], first)
