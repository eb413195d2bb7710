"""The decoder's training stage: rows laid out exactly as teacher forcing lays them out one by one, held-out
metrics, the alignment guide training its heads, and a resumed run ending with the same weights as an
uninterrupted one."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from train_work_dir import no_progress, prepared_work_dir

from tortoise_clvp.config import AutoregressiveConfig
from tortoise_clvp.train.autoregressive import (
    AutoregressiveTraining,
    evaluate_decoder,
    load_decoder,
    run_autoregressive,
)
from tortoise_clvp.train.config import AUTOREGRESSIVE_DIR, AlignmentGuide, LoopConfig, RecipeConfig
from tortoise_clvp.train.loop import CHECKPOINT_FILE, METRICS_FILE

CONFIG = AutoregressiveConfig(layers=2, model_dim=32, heads=2, max_text_tokens=20, max_mel_tokens=30,
                              number_mel_codes=18, conditioning_attn_blocks=1, calm_code=1, fix_tail=(1, 1, 1))


@pytest.fixture(scope="module")
def codes_work_dir(tmp_path_factory):
    return prepared_work_dir(tmp_path_factory, ("codes",))


def test_rows_of_a_batch_match_teacher_forcing_one_by_one():
    torch.manual_seed(0)
    model = AutoregressiveTraining(CONFIG).eval()
    cond = torch.randn(2, 80, 40)
    texts = [torch.tensor([5, 6, 7, 0]), torch.tensor([9, 0])]
    codes = [torch.tensor([3, 4, 5, 6, 2]), torch.tensor([7, 8])]
    with torch.no_grad():
        mel_logits, mel_targets, text_logits, text_targets, _ = model(cond, torch.tensor([1, 0]), texts, codes)
        latents = model.decoder.get_conditioning(cond[:, None])
        start = text_start = 0
        for row, voice in enumerate((1, 0)):
            text_hidden, mel_hidden = model.decoder.teacher_forced(latents[voice, None], texts[row][None], codes[row][None])
            m, t = len(codes[row]) + 1, len(texts[row]) + 1  # predicted positions: codes + stop; text after start
            expected = model.decoder.mel_head(mel_hidden[0, :m])
            assert torch.allclose(mel_logits[start : start + m], expected, atol=1e-5)
            assert torch.allclose(text_logits[text_start : text_start + t], model.text_head(text_hidden[0, :t]), atol=1e-5)
            start, text_start = start + m, text_start + t
    tokens = CONFIG.tokens
    assert mel_targets.tolist() == [3, 4, 5, 6, 2, tokens.mel_stop, 7, 8, tokens.mel_stop]
    assert text_targets.tolist() == [5, 6, 7, 0, 0, 9, 0, 0]  # the ids, the appended stop, the decoder's own stop


class FixedItems:
    """Stands in for ArData: item i is texts[i] and codes[i], all of one voice."""

    def __init__(self, texts, codes):
        self.texts, self.codes = texts, codes

    def batch(self, items, clips, generator):
        cond = torch.randn(1, 80, 40, generator=generator)
        return cond, torch.zeros(len(items), dtype=torch.long), [self.texts[i] for i in items], [self.codes[i] for i in items]


def test_text_gain_is_the_loss_added_by_another_rows_text():
    torch.manual_seed(0)
    model = AutoregressiveTraining(CONFIG).eval()
    settings = replace(RecipeConfig.smoke().autoregressive, batch_size=4)
    codes = [torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8, 9])]
    texts = [torch.tensor([5, 6, 0]), torch.tensor([9, 10, 11, 0])]
    metrics = evaluate_decoder(model, FixedItems(texts, codes), [0, 1], settings, seed=3)
    cond = FixedItems(texts, codes).batch([0, 1], 1, torch.Generator().manual_seed(3))[0]
    with torch.no_grad():
        right = torch.nn.functional.cross_entropy(*model(cond, torch.zeros(2, dtype=torch.long), texts, codes)[:2])
        rolled = torch.nn.functional.cross_entropy(*model(cond, torch.zeros(2, dtype=torch.long), texts[::-1], codes)[:2])
    assert metrics["loss"] == pytest.approx(right.item(), rel=1e-5)
    assert metrics["text_gain"] == pytest.approx((rolled - right).item(), rel=1e-4, abs=1e-6)
    assert metrics["text_gain"] != 0
    same_text = evaluate_decoder(model, FixedItems([texts[0]] * 2, codes), [0, 1], settings, seed=3)
    assert same_text["text_gain"] == 0  # nothing to read differently
    assert 0 < metrics["off_diagonal"] < 1  # the guide's heads (layer 0, head 0 in the smoke recipe), measured
    beyond = replace(settings, alignment=replace(settings.alignment, layer=CONFIG.layers))
    assert "off_diagonal" not in evaluate_decoder(model, FixedItems(texts, codes), [0, 1], beyond, seed=3)


def _guide_batch():
    cond = torch.randn(1, 80, 40, generator=torch.Generator().manual_seed(1))
    texts = [torch.tensor([5, 6, 7, 8, 0]), torch.tensor([9, 10, 0])]
    codes = [torch.tensor([3, 4, 5, 6, 7, 8, 9, 10]), torch.tensor([7, 8, 9, 10, 11])]
    return cond, torch.zeros(2, dtype=torch.long), texts, codes


def test_the_guide_trains_its_heads_toward_the_diagonal_and_nothing_after_them():
    torch.manual_seed(0)
    model = AutoregressiveTraining(CONFIG)
    guide = AlignmentGuide(layer=0, heads=1)
    batch = _guide_batch()
    first = model(*batch, guide).off_diagonal
    first.backward()
    assert model.decoder.blocks[0].attn.qkv.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in model.decoder.blocks[1].parameters())  # later layers do not shape it
    assert model.decoder.mel_head.weight.grad is None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(*batch, guide).off_diagonal
        loss.backward()
        optimizer.step()
    assert model(*batch, guide).off_diagonal.item() < 0.5 * first.item()


def test_without_a_guide_nothing_is_computed_and_a_guide_beyond_the_decoder_is_refused():
    model = AutoregressiveTraining(CONFIG)
    assert model(*_guide_batch()).off_diagonal is None
    assert model.can_guide(AlignmentGuide(layer=1, heads=2)) and not model.can_guide(AlignmentGuide(layer=2))
    with pytest.raises(ValueError, match="reads layer 2 and 2 head"):
        model(*_guide_batch(), AlignmentGuide(layer=2))
    with pytest.raises(ValueError, match="2 layers of 2 heads"):
        model(*_guide_batch(), AlignmentGuide(layer=0, heads=3))


def _config(steps: int) -> RecipeConfig:
    smoke = RecipeConfig.smoke()
    loop = LoopConfig(steps=steps, learning_rate=1e-3, warmup_steps=1, eval_every=4, checkpoint_every=2)
    return replace(smoke, autoregressive=replace(smoke.autoregressive, loop=loop))


class Interrupt(Exception):
    pass


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(codes_work_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for folder in (straight, resumed):
        shutil.copytree(codes_work_dir, folder)
    config = _config(steps=5)
    run_autoregressive(straight, config, no_progress)

    def stop_at_three(what, done, total, metrics):
        if done == 3:  # after step 3, which no checkpoint holds: the rerun redoes it from step 2
            raise Interrupt

    with pytest.raises(Interrupt):
        run_autoregressive(resumed, config, stop_at_three)
    assert torch.load(resumed / AUTOREGRESSIVE_DIR / CHECKPOINT_FILE, weights_only=True)["state"]["step"] == 2
    run_autoregressive(resumed, config, no_progress)
    for name in ("autoregressive.safetensors",):
        first, second = load_file(str(straight / AUTOREGRESSIVE_DIR / name)), load_file(str(resumed / AUTOREGRESSIVE_DIR / name))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    ends = [torch.load(f / AUTOREGRESSIVE_DIR / CHECKPOINT_FILE, weights_only=True) for f in (straight, resumed)]
    assert all(torch.equal(ends[0]["model"][k], ends[1]["model"][k]) for k in ends[0]["model"])
    assert ends[0]["state"]["step"] == ends[1]["state"]["step"] == 5


def test_the_stage_writes_a_decoder_that_samples_with_its_own_codebook(codes_work_dir, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(codes_work_dir, work)
    run_autoregressive(work, _config(steps=3), no_progress)
    decoder = load_decoder(work)
    tokens = decoder.config.tokens
    assert decoder.config.number_mel_codes == RecipeConfig.smoke().codes.model.codebook_size + 2
    assert tokens.fix_tail == (tokens.calm,) * 3 and decoder.config.max_mel_tokens >= 500
    metrics = (work / AUTOREGRESSIVE_DIR / METRICS_FILE).read_text()
    assert '"accuracy"' in metrics and '"text_loss"' in metrics and '"text_gain"' in metrics
    before = (work / AUTOREGRESSIVE_DIR / CHECKPOINT_FILE).stat().st_mtime_ns
    run_autoregressive(work, _config(steps=3), no_progress)  # finished: nothing more to do
    assert (work / AUTOREGRESSIVE_DIR / CHECKPOINT_FILE).stat().st_mtime_ns == before


def test_a_guided_run_adds_the_guide_to_its_loss(codes_work_dir, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(codes_work_dir, work)
    config = _config(steps=2)
    config = replace(config, autoregressive=replace(config.autoregressive, alignment_weight=1.0))
    reported = []

    def progress(what, done, total, metrics):
        no_progress(what, done, total, metrics)
        reported.append(metrics)

    run_autoregressive(work, config, progress)
    steps = [metrics for metrics in reported if "mel_loss" in metrics]
    assert steps and all(0 < metrics["off_diagonal"] < 1 for metrics in steps)
