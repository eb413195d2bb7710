"""Best-of-N by ear: the arithmetic on hand-made score/WER tables, Spearman by hand, the reranking report scored
through a stand-in transcriber on tiny models, and `--asr` without the eval extra."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from tortoise_clvp.bench.best_of_n import (
    CandidateErrors,
    average_ranks,
    best_of_n_rows,
    clvp_pick,
    mean_interval,
    noise_split,
    oracle_pick,
    pick_gain,
    spearman,
    text_correlation,
    utterance_errors,
)


def _set(scores, wer, cer=None) -> CandidateErrors:
    return CandidateErrors(tuple(scores), tuple(wer), tuple(cer if cer is not None else wer))


# arithmetic ------------------------------------------------------------------------------------------------------------
def test_one_text_by_hand():
    # CLVP likes candidate 2 best; the ASR likes candidate 1 best
    s = _set([0.1, 0.5, 0.9, 0.3], [0.5, 0.0, 0.25, 1.0], [0.2, 0.1, 0.05, 0.6])
    rows = best_of_n_rows([s], [1, 2, 4])
    assert [r["n"] for r in rows] == [1, 2, 4]
    one, two, four = rows
    # N = 1: every choice is the first candidate
    assert one == {"n": 1, "wer_clvp": 0.5, "wer_random": 0.5, "wer_oracle": 0.5,
                   "cer_clvp": 0.2, "cer_random": 0.2, "cer_oracle": 0.2}
    # N = 2: CLVP picks 1 (0.5 > 0.1), which is also the ASR's best
    assert two["wer_clvp"] == 0.0 and two["wer_random"] == pytest.approx(0.25) and two["wer_oracle"] == 0.0
    assert two["cer_clvp"] == pytest.approx(0.1) and two["cer_random"] == pytest.approx(0.15)
    # N = 4: CLVP picks 2; the oracle's CER is its WER-best candidate's (0.1), not the lowest CER of the four (0.05)
    assert four["wer_clvp"] == 0.25 and four["wer_random"] == pytest.approx(1.75 / 4) and four["wer_oracle"] == 0.0
    assert four["cer_clvp"] == pytest.approx(0.05) and four["cer_oracle"] == pytest.approx(0.1)
    assert four["cer_random"] == pytest.approx(0.95 / 4)


def test_ties_go_to_the_earliest_for_clvp_and_to_cer_then_earliest_for_the_oracle():
    assert clvp_pick([1.0, 3.0, 3.0, 2.0], 4) == 1
    assert clvp_pick([2.0, 2.0], 2) == 0
    assert oracle_pick([0.5, 0.2, 0.2, 0.2], [0.0, 0.3, 0.1, 0.1], 4) == 2  # WER tie -> lower CER -> earliest
    s = _set([1.0, 1.0, 1.0], [0.6, 0.0, 0.3])
    row = best_of_n_rows([s], [3])[0]
    assert row["wer_clvp"] == 0.6 and row["wer_oracle"] == 0.0  # a flat scorer picks the first one


def test_sets_are_averaged_with_equal_weight_and_the_grid_is_sorted():
    a = _set([0.0, 1.0], [1.0, 0.0])  # CLVP right
    b = _set([1.0, 0.0], [1.0, 0.0])  # CLVP wrong
    rows = best_of_n_rows([a, b], [2, 1, 2])
    assert [r["n"] for r in rows] == [1, 2]
    assert rows[1]["wer_clvp"] == 0.5 and rows[1]["wer_random"] == 0.5 and rows[1]["wer_oracle"] == 0.0
    assert rows[0]["wer_clvp"] == rows[0]["wer_random"] == rows[0]["wer_oracle"] == 1.0


def test_bad_tables_are_rejected():
    with pytest.raises(ValueError, match="as many"):
        _set([0.1, 0.2], [0.0])
    with pytest.raises(ValueError, match="finite"):
        _set([float("nan")], [0.0])
    with pytest.raises(ValueError, match="needs 4 candidates"):
        best_of_n_rows([_set([0.1, 0.2], [0.0, 1.0])], [4])
    with pytest.raises(ValueError, match="at least one"):
        best_of_n_rows([], [1])


def test_pick_gain_averages_seeds_within_a_text_then_texts_by_hand():
    # text A, two seeds: CLVP picks 0.0 where random is 0.5, then 1.0 where random is 0.5 -> difference 0
    a = [_set([0.0, 1.0], [1.0, 0.0]), _set([0.0, 1.0], [0.0, 1.0])]
    # text B, one seed: CLVP picks 0.0 against a random 0.5 -> -0.5
    b = [_set([1.0, 0.0], [0.0, 1.0])]
    gain = pick_gain([a, b], 2)
    assert (gain.texts, gain.clvp, gain.random) == (2, pytest.approx(0.25), pytest.approx(0.5))
    assert gain.difference == pytest.approx(-0.25) and gain.relative == pytest.approx(-0.5)
    half = 1.96 * (0.125 ** 0.5) / 2 ** 0.5  # stdev of (0, -0.5) over sqrt(2 texts)
    assert (gain.low, gain.high) == (pytest.approx(-0.25 - half), pytest.approx(-0.25 + half))
    # N = 1: CLVP's pick is the random pick; one text: no spread, no width
    one = pick_gain([a, b], 1, "cer")
    assert one.difference == 0.0 and one.low == one.high == 0.0
    assert pick_gain([b], 2).low == pick_gain([b], 2).high == pytest.approx(-0.5)


def test_mean_interval_by_hand():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])  # stdev 1
    assert mean == 2.0 and (low, high) == (pytest.approx(2 - 1.96 / 3 ** 0.5), pytest.approx(2 + 1.96 / 3 ** 0.5))
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def test_pick_gain_refuses_bad_input():
    with pytest.raises(ValueError, match="metric"):
        pick_gain([[_set([0.0], [0.0])]], 1, "per")
    with pytest.raises(ValueError, match="at least one text"):
        pick_gain([[]], 1)
    with pytest.raises(ValueError, match="needs 2 candidates"):
        pick_gain([[_set([0.0], [0.0])]], 2)


def test_spearman_by_hand():
    assert average_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # with ties: ranks x = 1, 2.5, 2.5, 4; y = 1, 2, 3, 4 -> Pearson of the ranks
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert spearman([1, 1, 1], [0, 1, 2]) is None and spearman([1], [2]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1])
    # per text: every seed's candidates together
    assert text_correlation([_set([3, 2], [0.0, 0.5]), _set([1, 0], [0.6, 1.0])]) == pytest.approx(-1.0)


def test_utterance_errors_normalise_both_sides():
    assert utterance_errors("I need 12 eggs.", "i need twelve eggs") == (0.0, 0.0)
    wer, cer = utterance_errors("the cat sat", "the cat")
    assert wer == pytest.approx(1 / 3) and cer == pytest.approx(4 / 11)
    assert utterance_errors("Hello.", "") == (1.0, 1.0)


def test_noise_split_by_hand():
    # no noise: the codes are everything, and the held-out seeds find the best candidate
    quiet = noise_split([[[0.2, 0.2], [0.6, 0.6], [0.4, 0.4]]])
    assert quiet.noise_variance == 0.0 and quiet.code_variance == pytest.approx(0.04) and quiet.code_share == 1.0
    assert (quiet.random, quiet.code_ranker, quiet.oracle) == (pytest.approx(0.4), 0.2, 0.2)
    # candidates 0.2 and 0.8 on average, each spread 0.04 by the noise over 3 seeds
    mixed = [[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]]
    one = noise_split([mixed])
    assert one.noise_variance == pytest.approx(0.04)
    assert one.code_variance == pytest.approx(0.18 - 0.04 / 3)  # the means' variance less the noise they still hold
    assert one.code_share == pytest.approx((0.18 - 0.04 / 3) / (0.18 - 0.04 / 3 + 0.04))
    assert (one.random, one.code_ranker, one.oracle) == (pytest.approx(0.3), 0.0, 0.0)
    # pure noise: equal means, so no code variance; the other seeds pick the candidate that is worse on the first
    noisy = [[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]]
    both = noise_split([mixed, noisy])
    assert (both.sets, both.candidates, both.seeds) == (2, 2, 3)
    assert both.code_variance == pytest.approx((0.18 - 0.04 / 3) / 2)
    assert both.noise_variance == pytest.approx((0.04 + 0.25) / 2)
    assert (both.random, both.code_ranker, both.oracle) == (pytest.approx(0.4), 0.5, 0.0)


def test_noise_split_refuses_ragged_or_too_small_tables():
    for bad in ([], [[[0.1], [0.2]]], [[[0.1, 0.2]]], [[[0.1, 0.2], [0.3]]],
                [[[0.1, 0.2], [0.3, 0.4]], [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]]):
        with pytest.raises(ValueError):
            noise_split(bad)


# the report, by ear ----------------------------------------------------------------------------------------------------
class EchoingTranscriber:
    """Stands in for Whisper: hears the text when the audio is longer than a threshold, else a wrong word; keeps
    every waveform it was given."""

    name = "echo"

    def __init__(self, texts: dict[int, str], threshold: int):
        self.texts, self.threshold, self.heard = texts, threshold, []

    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        self.heard.append(audio.clone())
        return self.texts.get(audio.shape[-1] > self.threshold, "nonsense")


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    from tortoise_clvp.api import TextToSpeech

    return TextToSpeech.from_local(tiny_model_dir)


def test_report_by_ear_on_tiny_models(tts, tmp_path, speech_clip, monkeypatch, without_matplotlib):
    from tortoise_clvp.bench.rerank_report import run_rerank_benchmark
    from tortoise_clvp.pipeline.decoding import DecodingOptions
    from tortoise_clvp.presets import PRESETS

    preset = replace(PRESETS["ultra_fast_dpm"], diffusion=replace(PRESETS["ultra_fast_dpm"].diffusion, steps=2))
    monkeypatch.setitem(PRESETS, "two_steps", preset)  # the cheapest audio a preset can name
    options = {"max_new_tokens": 12, "batch_size": 4}
    lines = [{"text": "Good morning.", "voice": str(speech_clip), "options": options, "preset": "two_steps"},
             {"text": "Fine, thanks.", "voice": str(speech_clip), "options": options, "preset": "two_steps"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    transcriber = EchoingTranscriber({True: "good morning"}, threshold=6000)
    events = []
    report = run_rerank_benchmark(tts, manifest, tmp_path / "out", candidates=(1, 2, 4), seeds=(0, 1),
                                  transcriber=transcriber, progress=lambda *e: events.append(e))
    data = report.data
    assert ("by ear", 4, 4) in events and len(transcriber.heard) == 2 * 2 * 4
    asr = data["asr"]
    assert [row["n"] for row in asr["best_of_n"]] == [1, 2, 4]
    assert [s["id"] for s in asr["spearman"]] == ["line1", "line2"]
    assert "## By ear (ASR): best of N" in report.markdown

    # the rows are the arithmetic on the per-candidate errors stored in the report
    sets = [_set(run["scores"], run["asr"]["wer"], run["asr"]["cer"]) for text in data["texts"] for run in text["runs"]]
    for got, want in zip(asr["best_of_n"], best_of_n_rows(sets, [1, 2, 4])):
        assert got == pytest.approx(want, abs=1e-6)
    for row in asr["best_of_n"]:
        assert row["wer_oracle"] <= min(row["wer_clvp"], row["wer_random"]) + 1e-9
    first = data["texts"][0]["runs"][0]
    assert first["asr"]["transcripts"] == ["good morning" if s * 24000 > 6000 else "nonsense"
                                           for s in first["asr"]["seconds"]]
    assert first["asr"]["wer"] == [0.0 if t == "good morning" else 1.0 for t in first["asr"]["transcripts"]]

    # the audio the ASR heard for CLVP's pick is the audio `generate` makes with that seed
    speech = tts.generate("Good morning.", [speech_clip], replace(
        preset, decoding=DecodingOptions(num_candidates=4, batch_size=4, max_new_tokens=12)), seed=0)
    assert torch.equal(transcriber.heard[first["chosen"]], speech.waveform)


def test_by_ear_needs_the_audio_models_and_says_so_before_sampling(tiny_model_dir, tmp_path, speech_clip):
    from tortoise_clvp.api import TextToSpeech
    from tortoise_clvp.bench.rerank_report import run_rerank_benchmark
    from tortoise_clvp.errors import CheckpointError, OptionsError

    tts = TextToSpeech.from_local(tiny_model_dir)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"text": "Hi there.", "voice": str(speech_clip), "preset": "loud"}) + "\n")
    with pytest.raises(OptionsError, match=r"m.jsonl:1: unknown preset \"loud\""):
        run_rerank_benchmark(tts, manifest, tmp_path / "out", candidates=(2,), seeds=(0,))
    manifest.write_text(json.dumps({"text": "Hi there.", "voice": str(speech_clip), "options": {"max_new_tokens": 8}}) + "\n")
    tts.models = replace(tts.models, diffusion=None)
    transcriber = EchoingTranscriber({}, 0)
    with pytest.raises(CheckpointError, match="m.jsonl:1: making audio needs the diffusion decoder"):
        run_rerank_benchmark(tts, manifest, tmp_path / "out", candidates=(2,), seeds=(0,), transcriber=transcriber)
    assert transcriber.heard == [] and not (tmp_path / "out" / "report.json").exists()


def test_asr_option_without_the_eval_extra_is_one_clear_message(tmp_path, monkeypatch, tiny_model_dir):
    from tortoise_clvp.cli import app

    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if the eval extra were not installed
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"text": "Hi.", "voice": "nowhere.wav"}\n')
    result = CliRunner().invoke(app, ["bench", "rerank", str(manifest), "--asr", "--models-dir", str(tiny_model_dir),
                                      "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'tortoise-clvp[eval]'" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
