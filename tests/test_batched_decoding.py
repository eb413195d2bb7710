"""The shared, continuously batched decoder: the same tokens as `sample_candidates` for the same seed, whether a
request decodes alone or with others joining and leaving; cancellation through a raising callback; bad requests."""

from __future__ import annotations

import threading

import pytest
import torch

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline.batched_decoding import BatchedDecoder
from tortoise_clvp.pipeline.decoding import DecodingOptions, sample_candidates

OPTIONS = DecodingOptions(num_candidates=6, batch_size=4, max_new_tokens=60)  # two batches: 4 rows, then 2


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny decoder as the API loads it (oneDNN-packed linears on CPU), owned by this module."""
    return TextToSpeech.from_local(tiny_model_dir).models.autoregressive


@pytest.fixture(scope="module")
def prompts(model):
    """Three (conditioning latent, text ids, seed) requests with texts of different lengths."""
    g = torch.Generator().manual_seed(3)
    dim = model.config.model_dim
    return [(torch.randn(dim, generator=g), torch.randint(3, 100, (length,), generator=g), seed)
            for length, seed in ((9, 11), (31, 12), (17, 13))]


def _alone(model, prompt, options=OPTIONS):
    cond, text, seed = prompt
    return sample_candidates(model, cond, text, options, torch.Generator().manual_seed(seed))


def _together(decoder, model, prompts, options=OPTIONS):
    """Every prompt from its own thread at once; their codes in prompt order."""
    results: list = [None] * len(prompts)
    gate = threading.Barrier(len(prompts))

    def run(index, cond, text, seed):
        gate.wait()
        results[index] = decoder.sample_candidates(model, cond, text, options, torch.Generator().manual_seed(seed))

    threads = [threading.Thread(target=run, args=(i, *p)) for i, p in enumerate(prompts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_batched_requests_get_the_tokens_they_get_alone(model, prompts):
    decoder = BatchedDecoder(model, max_rows=10)  # 4 + 4 rows fit, a third request's batch waits for rows
    try:
        alone = [_alone(model, prompt) for prompt in prompts]
        together = _together(decoder, model, prompts)
        stats = decoder.stats()
    finally:
        decoder.close()
    for expected, got in zip(alone, together):
        assert got.shape == (OPTIONS.num_candidates, OPTIONS.max_new_tokens)
        assert torch.equal(got, expected)
    lengths = (alone[0] != model.config.tokens.mel_stop).sum(dim=1)
    assert lengths.min() < lengths.max()  # rows stopped at different steps: rows left while others went on
    assert stats.batches == 6 and stats.active_rows == 0 and stats.waiting == 0
    assert stats.steps < sum(OPTIONS.max_new_tokens for _ in range(6))  # steps were shared


def test_progress_is_reported_and_a_raising_callback_cancels(model, prompts):
    decoder = BatchedDecoder(model, max_rows=8)
    steps, batches = [], []
    try:
        codes = decoder.sample_candidates(model, *prompts[0][:2], OPTIONS, torch.Generator().manual_seed(1),
                                          on_batch=lambda done, total: batches.append((done, total)),
                                          on_step=lambda tokens, finished: steps.append((tokens, finished)))
        assert codes.shape[0] == OPTIONS.num_candidates
        assert batches == [(1, 2), (2, 2)]
        assert steps[-1] == (2 * OPTIONS.max_new_tokens, OPTIONS.num_candidates)
        assert [s[0] for s in steps] == sorted(s[0] for s in steps)

        def cancel(tokens, finished):
            raise Stop

        with pytest.raises(Stop):
            decoder.sample_candidates(model, *prompts[1][:2], OPTIONS, torch.Generator(), on_step=cancel)
        # the decoder carries on: the next request still gets its exact tokens, and nothing is left behind
        assert torch.equal(_together(decoder, model, prompts[:1])[0], _alone(model, prompts[0]))
        assert decoder.stats().active_rows == 0
    finally:
        decoder.close()


def test_row_cache_rows_keep_their_own_sequences_when_others_leave(model):
    """Two prompts of different lengths decode side by side in a RowKVCache; the first leaves and the second moves
    up; its logits stay those of decoding it alone with the ordinary cache."""
    g = torch.Generator().manual_seed(5)
    dim = model.config.model_dim
    prompts = [torch.randn(1, length, dim, generator=g) for length in (7, 12)]
    codes = torch.randint(0, 100, (6,), generator=g)

    alone = []
    model.setup_cache(1, 12 + len(codes))
    alone.append(model.prefill(prompts[1]))
    for step, code in enumerate(codes):
        alone.append(model.decode_step(code.reshape(1), step + 1, 12 + step))
    model.release_cache()

    model.setup_row_cache(2, 32)
    together = [model.prefill_rows(prompts[0], slice(0, 1)), model.prefill_rows(prompts[1], slice(1, 2))][1:]
    lengths = torch.tensor([7, 12])
    for step, code in enumerate(codes):
        if step == 3:  # the first row leaves; the second moves to row 0
            model.keep_cache_rows(torch.tensor([1]), 12 + step)
            lengths = lengths[1:]
        rows = len(lengths)
        logits = model.decode_step(code.repeat(rows), torch.full((rows,), step + 1), lengths + step)
        together.append(logits[-1:])
    model.release_cache()
    for expected, got in zip(alone, together):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bad_requests_are_refused(model, prompts, tiny_model_dir):
    decoder = BatchedDecoder(model, max_rows=3)
    try:
        with pytest.raises(OptionsError, match="max_rows"):
            decoder.sample_candidates(model, *prompts[0][:2], OPTIONS)  # batches of 4 rows never fit in 3
        other = TextToSpeech.from_local(tiny_model_dir).models.autoregressive
        with pytest.raises(OptionsError, match="another model"):
            decoder.sample_candidates(other, *prompts[0][:2], DecodingOptions(num_candidates=2, batch_size=2))
    finally:
        decoder.close()
    with pytest.raises(OptionsError, match="max_rows"):
        BatchedDecoder(model, max_rows=0)
    with pytest.raises(OptionsError, match="threads"):
        BatchedDecoder(model, threads=0)
