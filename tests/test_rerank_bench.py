"""The reranking report: CLAP retrieval metrics on hand-made matrices, manifest errors, and a tiny end-to-end run
(tiny seeded models, synthesized clips)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tortoise_clvp.bench.rerank_report import (
    _DECODING_KEYS,
    _SAMPLING_KEYS,
    PLOTS_SKIPPED,
    candidate_ranks,
    check_grid,
    clap_metrics,
    growth_stability,
    load_manifest,
    retrieval_metrics,
    run_rerank_benchmark,
    seed_stability,
    top1_margin,
    true_pair_ranks,
)
from tortoise_clvp.errors import AudioError, InputTextError, OptionsError
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.pipeline.sampling import SamplingOptions

METRIC_KEYS = {"mean_rank", "median_rank", "R@1", "R@5", "R@10", "mAP@10"}


def _clap_reference(logits: np.ndarray) -> dict[str, float]:
    """LAION CLAP's evaluation code (training/train.py, get_metrics), literally: argsort, then where."""
    ground_truth = np.arange(len(logits)).reshape(-1, 1)
    ranking = np.argsort(-logits, axis=1, kind="stable")
    preds = np.where(ranking == ground_truth)[1]
    metrics = {"mean_rank": preds.mean() + 1, "median_rank": np.floor(np.median(preds)) + 1}
    for k in (1, 5, 10):
        metrics[f"R@{k}"] = np.mean(preds < k)
    metrics["mAP@10"] = np.mean(np.where(preds < 10, 1 / (preds + 1), 0.0))
    return metrics


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


# metrics -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 12])
def test_identity_like_matrix_is_perfect_both_ways(n):
    scores = torch.eye(n) * 5 + torch.rand(n, n)  # the diagonal always wins
    metrics = retrieval_metrics(scores)
    perfect = {"mean_rank": 1.0, "median_rank": 1.0, "R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP@10": 1.0}
    _close(metrics["text_to_speech"], perfect)
    _close(metrics["speech_to_text"], perfect)


@pytest.mark.parametrize(
    "n, want",
    [
        # the true pair is always last: p = n - 1
        (6, {"mean_rank": 6.0, "median_rank": 6.0, "R@1": 0.0, "R@5": 0.0, "R@10": 1.0, "mAP@10": 1 / 6}),
        (12, {"mean_rank": 12.0, "median_rank": 12.0, "R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "mAP@10": 0.0}),
    ],
)
def test_reversed_matrix_ranks_every_true_pair_last(n, want):
    scores = -torch.eye(n) * 3 + torch.rand(n, n) * 0.1  # the diagonal always loses
    assert torch.equal(true_pair_ranks(scores), torch.full((n,), n - 1))
    metrics = retrieval_metrics(scores)
    _close(metrics["text_to_speech"], want)
    _close(metrics["speech_to_text"], want)


def test_staircase_over_ten_texts_gives_every_rank_once():
    n = 12  # row i: i entries above the diagonal (j < i), so p_i = i; column j: n - 1 - j above it
    scores = torch.tensor([[1.0 if j < i else 0.0 if j == i else -1.0 for j in range(n)] for i in range(n)])
    assert torch.equal(true_pair_ranks(scores), torch.arange(n))
    assert torch.equal(true_pair_ranks(scores.T), torch.arange(n).flip(0))
    want = {
        "mean_rank": 6.5,  # mean(0..11) + 1
        "median_rank": 6.0,  # floor(5.5) + 1
        "R@1": 1 / 12, "R@5": 5 / 12, "R@10": 10 / 12,
        "mAP@10": sum(1 / k for k in range(1, 11)) / 12,
    }
    metrics = retrieval_metrics(scores)
    _close(metrics["text_to_speech"], want)
    _close(metrics["speech_to_text"], want)


def test_ties_count_against_the_true_pair():
    # rows: p = 0, 1 (strictly), 2 (both others tie the diagonal); columns: 0, 1 (one tie), 2 (two ties)
    scores = torch.tensor([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0], [1.0, 0.5, 0.0]])
    assert true_pair_ranks(scores).tolist() == [0, 1, 2]
    assert true_pair_ranks(scores.T).tolist() == [0, 1, 2]
    want = {"mean_rank": 2.0, "median_rank": 2.0, "R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0, "mAP@10": (1 + 1 / 2 + 1 / 3) / 3}
    metrics = retrieval_metrics(scores)
    _close(metrics["text_to_speech"], want)
    _close(metrics["speech_to_text"], want)
    # a scorer that says nothing (all equal) ranks every true pair last, never first
    constant = retrieval_metrics(torch.ones(4, 4))["text_to_speech"]
    assert constant["R@1"] == 0.0 and constant["mean_rank"] == 4.0


def test_median_rank_of_an_even_count_floors_the_middle_mean():
    assert clap_metrics(torch.tensor([0, 1, 2, 5]))["median_rank"] == 2.0  # floor(1.5) + 1
    assert clap_metrics(torch.tensor([0, 3]))["median_rank"] == 2.0  # floor(1.5) + 1
    assert clap_metrics(torch.tensor([0, 4]))["median_rank"] == 3.0  # floor(2.0) + 1


@pytest.mark.parametrize("n", [2, 7, 10, 25])
def test_matches_clap_evaluation_code_without_ties(n):
    generator = torch.Generator().manual_seed(n)
    scores = torch.randn(n, n, generator=generator, dtype=torch.float64) + torch.eye(n, dtype=torch.float64) * 0.8
    metrics = retrieval_metrics(scores)
    _close(metrics["text_to_speech"], _clap_reference(scores.numpy()))
    _close(metrics["speech_to_text"], _clap_reference(scores.T.numpy()))
    assert set(metrics["text_to_speech"]) == METRIC_KEYS


def test_metrics_reject_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_candidate_ranks_margin_and_stability_helpers():
    scores = torch.tensor([0.5, 2.0, 2.0, -1.0])
    assert candidate_ranks(scores).tolist() == [2, 0, 1, 3]  # tie: sampling order
    assert top1_margin(scores) == 0.0 and top1_margin(torch.tensor([3.0, 1.0])) == 2.0
    assert top1_margin(torch.tensor([1.0])) is None

    kept = torch.tensor([5.0, 1.0, 0.0, 0.0])  # best of 2 is best of 4
    overtaken = torch.tensor([1.0, 0.0, 0.0, 9.0])  # the 4th beats the best of 2
    result = growth_stability([kept, overtaken], [2, 4, 1])
    assert result["steps"] == [{"from": 1, "to": 2, "kept": 1.0, "count": 2}, {"from": 2, "to": 4, "kept": 0.5, "count": 2}]
    assert result["vs_largest"] == [{"n": 1, "same_as_largest": 0.5}, {"n": 2, "same_as_largest": 0.5}, {"n": 4, "same_as_largest": 1.0}]

    a, b = torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4])
    same = seed_stability([[a, a.clone(), b]], [[1.0, 1.0, 4.0]], [[3, 3, 3]])
    assert same["identical_codes"] == pytest.approx(1 / 3) and same["length_std"] == 0.0
    assert same["score_std"] == pytest.approx(math.sqrt(3.0))
    assert seed_stability([[a]], [[1.0]], [[3]])["identical_codes"] is None


def test_grid_checks():
    assert check_grid([16, 4, 4], [3, 1]) == ((4, 16), (3, 1))
    for candidates, seeds in (([], [0]), ([0], [0]), ([4], []), ([4], [1, 1]), ([4], [-1])):
        with pytest.raises(OptionsError):
            check_grid(candidates, seeds)


def test_option_tables_cover_the_dataclasses():
    assert set(_DECODING_KEYS) | {"sampling"} == {f.name for f in dataclasses.fields(DecodingOptions)}
    assert set(_SAMPLING_KEYS) == {f.name for f in dataclasses.fields(SamplingOptions)}


# manifest --------------------------------------------------------------------------------------------------------------
@pytest.fixture
def clip(speech_clip) -> Path:
    return speech_clip


def _write(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_manifest_parses_paths_options_and_ids(tmp_path, clip):
    relative = os.path.relpath(clip, tmp_path)
    path = _write(tmp_path, [
        {"text": "One.", "voice": str(clip)},
        "",
        {"text": "Two.", "voice": [relative, str(clip)], "id": "two",
         "options": {"max_new_tokens": 30, "temperature": 0.5, "sampling": {"top_k": 50}, "num_candidates": 99}},
    ])
    first, second = load_manifest(path)
    assert (first.line, first.id, first.voice, first.options) == (1, "line1", (clip,), DecodingOptions())
    assert second.line == 3 and second.id == "two"
    assert [p.resolve() for p in second.voice] == [clip.resolve(), clip.resolve()]
    assert second.options.max_new_tokens == 30 and second.options.num_candidates == 99
    assert second.options.sampling == SamplingOptions(temperature=0.5, top_k=50)


@pytest.mark.parametrize(
    "line, error, match",
    [
        ('{"text": "Hi.", "voice": ', OptionsError, "invalid JSON"),
        ('["Hi."]', OptionsError, "JSON object"),
        ({"voice": "CLIP"}, OptionsError, "missing 'text'"),
        ({"text": "Hi."}, OptionsError, "missing 'voice'"),
        ({"text": "  ", "voice": "CLIP"}, InputTextError, "non-empty string"),
        ({"text": "Hi.", "voice": []}, OptionsError, "'voice' must be"),
        ({"text": "Hi.", "voice": "nowhere.wav"}, AudioError, "not found"),
        ({"text": "Hi.", "voice": "CLIP", "optons": {}}, OptionsError, "unknown key"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"max_tokens": 5}}, OptionsError, "unknown option 'max_tokens'"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"sampling": {"temp": 1}}}, OptionsError, "unknown sampling option"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"max_new_tokens": "5"}}, OptionsError, "must be int"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"do_sample": 1}}, OptionsError, "must be bool"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"top_p": 1.5}}, OptionsError, "top_p must be in"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"min_new_tokens": 9, "max_new_tokens": 5}}, OptionsError, "min_new_tokens"),
        ({"text": "Hi.", "voice": "CLIP", "options": {"top_k": 5, "sampling": {"top_k": 6}}}, OptionsError, "both flat"),
        ({"text": "Hi.", "voice": "CLIP", "options": [1]}, OptionsError, "must be a JSON object"),
        ({"text": "Hi.", "voice": "CLIP", "id": "first"}, OptionsError, "already used on line 1"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, clip, line, error, match):
    if isinstance(line, dict):
        line = json.loads(json.dumps(line).replace('"CLIP"', json.dumps(str(clip))))
    path = _write(tmp_path, [{"text": "Fine.", "voice": str(clip), "id": "first"}, "", line])
    with pytest.raises(error, match=match) as info:
        load_manifest(path)
    assert f"{path}:3:" in str(info.value)


def test_empty_or_missing_manifest_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(OptionsError, match="no entries"):
        load_manifest(empty)
    with pytest.raises(OptionsError, match="not found"):
        load_manifest(tmp_path / "missing.jsonl")


def test_bundled_example_manifest_parses():
    entries = load_manifest(Path(__file__).resolve().parent.parent / "benchmarks" / "manifests" / "example.jsonl")
    assert 4 <= len(entries) <= 6
    assert all(entry.voice[0].name == "clip1.flac" and entry.voice[0].is_file() for entry in entries)


# end to end ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    from tortoise_clvp.api import TextToSpeech

    return TextToSpeech.from_local(tiny_model_dir)


def test_too_long_text_fails_before_sampling_with_its_line(tts, tmp_path, clip):
    small = {"max_new_tokens": 8}
    path = _write(tmp_path, [{"text": "Short.", "voice": str(clip), "options": small},
                             {"text": "word " * (tts.models.autoregressive.config.max_text_tokens + 1), "voice": str(clip),
                              "options": small}])
    with pytest.raises(InputTextError, match=f"{path}:2:.*tokens long"):
        run_rerank_benchmark(tts, path, tmp_path / "out", candidates=(2,), seeds=(0,))
    assert not (tmp_path / "out" / "report.json").exists()


def test_end_to_end_on_tiny_models(tts, tmp_path, speech_clips, monkeypatch, without_matplotlib):
    clip_a, clip_b = speech_clips["long_16k_float_loud"], speech_clips["mono_24k"]
    options = {"max_new_tokens": 8, "batch_size": 4}
    path = _write(tmp_path, [
        {"text": "Good morning.", "voice": str(clip_a), "options": options},
        {"text": "How are you today?", "voice": [str(clip_b)], "options": options, "id": "how"},
        {"text": "Fine, thanks.", "voice": os.path.relpath(clip_a, tmp_path), "options": {**options, "temperature": 1.0}},
    ])
    events = []
    report = run_rerank_benchmark(tts, path, tmp_path / "out", candidates=(4, 2), seeds=(0, 1),
                                  progress=lambda *event: events.append(event), metadata={"note": "test"})

    out = tmp_path / "out"
    assert report.json_path == out / "report.json" and report.markdown_path == out / "report.md"
    data = json.loads(report.json_path.read_text())
    assert data == json.loads(json.dumps(report.data))
    assert report.markdown_path.read_text() == report.markdown and "| text -> speech" in report.markdown
    assert data["plots"] == PLOTS_SKIPPED and report.plot_paths == []
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    assert events[-1] == ("retrieval", 2, 2) and ("sampling", 6, 6) in events

    assert {"schema", "created", "manifest", "environment", "grid", "design", "texts", "retrieval", "stability",
            "throughput", "plots"} <= set(data)
    assert data["grid"]["candidates"] == [2, 4] and data["environment"]["note"] == "test"
    assert [t["id"] for t in data["texts"]] == ["line1", "how", "line3"]
    for text in data["texts"]:
        assert text["text_tokens"] == len(tts.tokenize(text["text"]))
        assert text["options"]["num_candidates"] == 4 and text["options"]["max_new_tokens"] == 8
        assert [run["seed"] for run in text["runs"]] == [0, 1]
        for run in text["runs"]:
            assert len(run["scores"]) == len(run["lengths"]) == run["candidates"] == 4
            assert sorted(run["ranks"]) == [0, 1, 2, 3]
            assert run["ranks"][run["chosen"]] == 0
            assert run["chosen_score"] == max(run["scores"])
            assert run["margin"] >= 0 and all(step["margin"] >= 0 for step in run["by_n"])
            assert all(0 <= length <= 8 for length in run["lengths"])
            assert len(run["chosen_codes"]) == run["chosen_length"] == run["lengths"][run["chosen"]]
            assert [step["n"] for step in run["by_n"]] == [2, 4] and run["by_n"][-1]["same_as_largest"]
            assert run["by_n"][0]["chosen"] < 2
            assert run["timings"]["sampling_s"] > 0 and run["timings"]["scoring_s"] > 0
    # the report conditions through the one entry point (the fixed crop seed; clip_a is longer than the crop), so
    # `candidates` on the clip itself gives the same candidates for a seed: seeds are what vary them
    again = tts.candidates("Good morning.", [clip_a],
                           DecodingOptions(num_candidates=4, batch_size=4, max_new_tokens=8), seed=1)
    assert again.ranked.scores.tolist() == pytest.approx(data["texts"][0]["runs"][1]["scores"], abs=1e-5)

    retrieval = data["retrieval"]
    assert retrieval["texts"] == 3 and [s["seed"] for s in retrieval["per_seed"]] == [0, 1]
    for seed_index, per_seed in enumerate(retrieval["per_seed"]):
        matrix = torch.tensor(per_seed["scores"])
        assert matrix.shape == (3, 3)
        # the diagonal is each text's own chosen score, recomputed through the matrix path
        diagonal = [text["runs"][seed_index]["chosen_score"] for text in data["texts"]]
        assert matrix.diagonal().tolist() == pytest.approx(diagonal, abs=1e-4)
        for direction in ("text_to_speech", "speech_to_text"):
            assert set(per_seed[direction]) == METRIC_KEYS
            assert 1 <= per_seed[direction]["mean_rank"] <= 3 and per_seed[direction]["R@5"] == 1.0
    assert set(retrieval["mean"]["text_to_speech"]) == METRIC_KEYS

    stability = data["stability"]
    assert [s["from"] for s in stability["growing_n"]["steps"]] == [2]
    assert stability["growing_n"]["vs_largest"][-1] == {"n": 4, "same_as_largest": 1.0}
    assert [row["n"] for row in stability["best_by_n"]] == [2, 4]
    assert stability["best_by_n"][1]["mean_best_score"] >= stability["best_by_n"][0]["mean_best_score"] - 1e-9
    assert [row["n"] for row in stability["across_seeds"]] == [2, 4]
    assert all(0 <= row["identical_codes"] <= 1 for row in stability["across_seeds"])

    throughput = data["throughput"]
    assert throughput["candidates_sampled"] == throughput["candidates_scored"] == 3 * 2 * 4
    assert throughput["sampling_candidates_per_s"] > 0 and throughput["scoring_candidates_per_s"] > 0
    assert throughput["wall_s"] > 0


def test_plots_are_rendered_with_matplotlib(tts, tmp_path, speech_clip):
    pytest.importorskip("matplotlib")  # in the test extra; optional for users (the bench extra)
    from PIL import Image

    clip = str(speech_clip)
    options = {"max_new_tokens": 6, "batch_size": 2}
    path = _write(tmp_path, [{"text": "One.", "voice": clip, "options": options},
                             {"text": "Two words.", "voice": clip, "options": options}])
    report = run_rerank_benchmark(tts, path, tmp_path / "out", candidates=(2,), seeds=(0,))
    assert report.plot_paths and report.data["plots"] == [p.name for p in report.plot_paths]
    for plot in report.plot_paths:
        with Image.open(plot) as image:
            assert image.format == "PNG" and image.size[0] > 100
