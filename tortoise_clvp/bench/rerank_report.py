"""The CLVP reranking benchmark: a manifest of texts -> sampled candidates -> scores, retrieval, stability, speed.

Manifest: JSON Lines, one object per text::

    {"text": "Hello there.", "voice": "../voices/me/clip1.wav", "options": {"max_new_tokens": 250}, "id": "hello"}

``voice`` is one clip path or a list of them (relative paths resolve against the manifest's folder). ``options``
holds `DecodingOptions` fields (``batch_size``, ``max_new_tokens``, ``min_new_tokens``, ``mel_positions``,
``drop_remainder``) and `SamplingOptions` fields, flat (``temperature``, ``top_p``, ``top_k``,
``repetition_penalty``, ``penalize_prompt_ids``, ``do_sample``) or nested under ``"sampling"``;
``num_candidates`` is accepted but replaced by the benchmark's candidate grid. ``id`` is optional (default
``line<N>``). ``preset`` (optional, default the model's own, `TextToSpeech.default_preset`) names the preset whose
diffusion settings turn candidates into audio when the run is scored by ear. Blank lines are skipped. Every problem is reported with the
manifest's file name and line number.

Design (what the numbers mean):

- Nested candidate sets. For each text and seed, ``max(candidates)`` candidates are sampled ONCE, in the
  manifest's fixed ``batch_size``, with `TextToSpeech.candidates` (seeded, so repeatable); the set for a smaller
  N is the first N of them. The sampler's draws depend on batch composition, so these N are not bit-identical
  to what ``num_candidates=N`` would sample; but every row is an independent draw from the same model and
  prompt, so the first N are N candidates from the very distribution a fresh run draws from. The "N grows"
  question thus becomes: does the best of the first n stay the best as more candidates are added? That is what
  someone choosing N wants to know, and it costs one sampling run per seed instead of one per (N, seed).
- One conditioning per voice, computed once by `TextToSpeech.get_conditioning` (the one entry point: clips longer
  than 6 s cropped from the fixed crop seed, as in `generate` and the CLI) and shared by every text and seed using
  that voice, so seeds vary the candidate sampling only.
- Candidate ranks are 0-based positions in the descending score order, ties broken by sampling order (as
  `rerank.rank` does): rank 0 is the chosen candidate. The top-1 margin is best minus second-best score
  (None for one candidate), so it is >= 0.
- Retrieval: the (texts x texts) matrix of CLVP scores of every text against the chosen candidate (largest N)
  of every text, per seed, from `ClvpModel.text_latents`, `speech_latents` and `score` on the fixed codes.
  Metrics follow LAION CLAP's evaluation: with p_i the 0-based rank of the true pair in its row sorted
  descending, mean rank = mean(p) + 1, median rank = floor(median(p)) + 1, R@k = mean(p < k) for k = 1, 5, 10,
  mAP@10 = mean(1 / (p + 1) if p < 10 else 0). text->speech reads rows, speech->text reads columns.
  Tie rule (CLAP leaves it to argsort): ties count AGAINST the true pair, p_i = #{j != i : s_ij >= s_ii}, so a
  scorer that gives everything the same score ranks last, never first.
- Stability across seeds compares the chosen candidate's codes (identical or not) and the spread of its score
  and length over seeds: with sampling, identical codes from different seeds are rare for long outputs, so the
  spreads are the practical measure.
- Throughput: candidates per second of the sampling stage and of the scoring stage (the fix-up and CLVP scoring
  as `TextToSpeech.candidates` times them), summed over every text and seed.
- By ear (with a transcriber, `clvp-tts bench rerank --asr`): every candidate becomes audio (the line's preset for
  the diffusion stage) and is transcribed; ``asr.best_of_n`` compares CLVP's pick, a random pick and the ASR-best
  pick for every N, and ``asr.spearman`` gives each text's rank correlation of CLVP score and WER
  (`bench.best_of_n` defines them).

The numbers are only as meaningful as the weights: with random models the run works end to end but measures
nothing about speech. The library writes files and never prints.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..atomic import write_bytes_atomic
from ..errors import AudioError, InputTextError, OptionsError, TortoiseClvpError
from ..pipeline.decoding import DecodingOptions
from ..pipeline.sampling import SamplingOptions
from ..presets import PRESETS
from .best_of_n import HeardCandidates, Transcriber, best_of_n_rows, hear_candidates, text_correlation

Progress = Callable[[str, int, int], None]  # (stage, done, total)

SCHEMA = "tortoise_clvp.bench.rerank_report/1"
RECALL_KS = (1, 5, 10)
MAP_K = 10
PLOTS_SKIPPED = "skipped: matplotlib not installed (pip install 'tortoise-clvp[bench]')"
DEFAULT_CANDIDATES = (4, 16)
DEFAULT_SEEDS = (0, 1)

# manifest option keys -> the JSON type each takes; a test asserts these cover the dataclasses' fields
_DECODING_KEYS: dict[str, str] = {
    "num_candidates": "int",
    "batch_size": "int",
    "max_new_tokens": "int",
    "min_new_tokens": "int",
    "mel_positions": "str",
    "drop_remainder": "bool",
}
_SAMPLING_KEYS: dict[str, str] = {
    "temperature": "number",
    "top_p": "number",
    "top_k": "int or null",
    "repetition_penalty": "number",
    "penalize_prompt_ids": "bool",
    "do_sample": "bool",
}
_ENTRY_KEYS = ("text", "voice", "options", "id", "preset")


# manifest ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: `options.num_candidates` is a placeholder the benchmark replaces."""

    line: int
    id: str
    text: str
    voice: tuple[Path, ...]
    options: DecodingOptions
    preset: str | None = None  # its diffusion settings make the audio the ASR hears (None: the model's default)


def _where(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "int or null":
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    raise AssertionError(kind)


def _checked(values: Mapping[str, Any], table: Mapping[str, str], where: str, what: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key not in table:
            raise OptionsError(
                f"{where}: unknown {what} {key!r}; known keys: {', '.join(sorted(table))}"
            )
        if not _type_ok(value, table[key]):
            raise OptionsError(f"{where}: option {key!r} must be {table[key]}, got {json.dumps(value)}")
        out[key] = float(value) if table[key] == "number" else value
    return out


def parse_options(options: Any, where: str = "options") -> DecodingOptions:
    """A manifest's ``options`` object -> DecodingOptions (OptionsError naming `where` on any problem)."""
    if options is None:
        return DecodingOptions()
    if not isinstance(options, dict):
        raise OptionsError(f"{where}: 'options' must be a JSON object, got {json.dumps(options)}")
    options = dict(options)
    nested = options.pop("sampling", None)
    if nested is not None and not isinstance(nested, dict):
        raise OptionsError(f"{where}: 'options.sampling' must be a JSON object, got {json.dumps(nested)}")
    flat_sampling = {key: options.pop(key) for key in list(options) if key in _SAMPLING_KEYS}
    decoding = _checked(options, _DECODING_KEYS, where, "option")
    sampling = _checked(nested or {}, _SAMPLING_KEYS, where, "sampling option")
    both = sorted(set(sampling) & set(flat_sampling))
    if both:
        raise OptionsError(f"{where}: {', '.join(both)} given both flat and under 'sampling'; give each once")
    sampling.update(_checked(flat_sampling, _SAMPLING_KEYS, where, "option"))
    try:
        return DecodingOptions(sampling=SamplingOptions(**sampling), **decoding)
    except OptionsError as error:
        raise OptionsError(f"{where}: {error}") from error


def _parse_voice(voice: Any, folder: Path, where: str) -> tuple[Path, ...]:
    clips = [voice] if isinstance(voice, str) else voice
    if not isinstance(clips, list) or not clips or not all(isinstance(c, str) and c for c in clips):
        raise OptionsError(
            f"{where}: 'voice' must be a clip path or a non-empty list of clip paths, got {json.dumps(voice)}"
        )
    paths = []
    for clip in clips:
        path = Path(clip).expanduser()
        path = (path if path.is_absolute() else folder / path).resolve()
        if not path.is_file():
            raise AudioError(f"{where}: voice clip {clip!r} not found (looked at {path})")
        paths.append(path)
    return tuple(paths)


def parse_manifest_line(raw: str, line: int, manifest: Path) -> ManifestEntry:
    """One non-blank manifest line -> ManifestEntry; errors name `manifest:line`."""
    where = _where(manifest, line)
    try:
        entry = json.loads(raw)
    except json.JSONDecodeError as error:
        raise OptionsError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from error
    if not isinstance(entry, dict):
        raise OptionsError(f"{where}: each line must be a JSON object with 'text' and 'voice', got {raw.strip()[:60]}")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise OptionsError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(_ENTRY_KEYS)}")
    for key in ("text", "voice"):
        if key not in entry:
            raise OptionsError(f"{where}: missing {key!r}; each line needs 'text' and 'voice'")
    text = entry["text"]
    if not isinstance(text, str) or not text.strip():
        raise InputTextError(f"{where}: 'text' must be a non-empty string, got {json.dumps(text)}")
    ident = entry.get("id", f"line{line}")
    if not isinstance(ident, (str, int)) or isinstance(ident, bool) or str(ident) == "":
        raise OptionsError(f"{where}: 'id' must be a non-empty string, got {json.dumps(ident)}")
    voice = _parse_voice(entry["voice"], manifest.parent, where)
    preset = entry.get("preset")
    if preset is not None and preset not in PRESETS:
        raise OptionsError(f"{where}: unknown preset {json.dumps(preset)}; choose one of {', '.join(PRESETS)}")
    return ManifestEntry(line, str(ident), text, voice, parse_options(entry.get("options"), where), preset)


def load_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read and check a JSONL manifest (see the module docstring); raises with the line number of any problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as error:
        raise OptionsError(f"manifest {path} not found") from error
    except (OSError, UnicodeDecodeError) as error:
        raise OptionsError(f"cannot read manifest {path}: {error}") from error
    entries, seen = [], {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        entry = parse_manifest_line(raw, number, path)
        if entry.id in seen:
            raise OptionsError(f"{_where(path, number)}: id {entry.id!r} already used on line {seen[entry.id]}")
        seen[entry.id] = number
        entries.append(entry)
    if not entries:
        raise OptionsError(f"manifest {path} has no entries; write one JSON object per line with 'text' and 'voice'")
    return entries


def check_grid(candidates: Iterable[int], seeds: Iterable[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted unique candidate counts (each >= 1) and seeds in given order (unique, >= 0)."""
    candidates, seeds = list(candidates), list(seeds)
    if not candidates or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in candidates):
        raise OptionsError(f"candidate counts must be integers >= 1, got {candidates}")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise OptionsError(f"seeds must be integers >= 0, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise OptionsError(f"seeds must differ from each other, got {seeds}")
    return tuple(sorted(set(candidates))), tuple(seeds)


# metrics (pure) ----------------------------------------------------------------------------------------------------
def _check_square(scores: Tensor) -> Tensor:
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise ValueError(f"need a non-empty square (n, n) score matrix, got shape {tuple(scores.shape)}")
    scores = scores.detach().double().cpu()
    if not torch.isfinite(scores).all():
        raise ValueError("the score matrix holds NaN or infinite values")
    return scores


def true_pair_ranks(scores: Tensor) -> Tensor:
    """0-based rank of each row's diagonal entry in that row sorted descending; ties count against it.

    p_i = #{j != i : scores[i, j] >= scores[i, i]}. (n, n) -> (n,) long.
    """
    scores = _check_square(scores)
    diagonal = scores.diagonal().unsqueeze(1)
    at_least = (scores >= diagonal).sum(dim=1) - 1  # minus the true pair itself
    return at_least.long()


def clap_metrics(ranks: Tensor) -> dict[str, float]:
    """LAION CLAP retrieval metrics from 0-based ranks p: mean/median rank, R@1/5/10, mAP@10."""
    p = ranks.detach().double().cpu()
    if p.dim() != 1 or p.numel() == 0:
        raise ValueError(f"need a non-empty 1-D tensor of ranks, got shape {tuple(p.shape)}")
    metrics = {
        "mean_rank": float(p.mean()) + 1.0,
        "median_rank": math.floor(float(torch.quantile(p, 0.5))) + 1.0,  # numpy's median: mean of the middle two
    }
    for k in RECALL_KS:
        metrics[f"R@{k}"] = float((p < k).double().mean())
    metrics[f"mAP@{MAP_K}"] = float(torch.where(p < MAP_K, 1.0 / (p + 1.0), torch.zeros_like(p)).mean())
    return metrics


def retrieval_metrics(scores: Tensor) -> dict[str, dict[str, float]]:
    """(n, n) scores, rows = texts, columns = speech (entry i, i the true pair) -> CLAP metrics both ways.

    text_to_speech ranks each row (which speech fits text i), speech_to_text each column.
    """
    scores = _check_square(scores)
    return {
        "text_to_speech": clap_metrics(true_pair_ranks(scores)),
        "speech_to_text": clap_metrics(true_pair_ranks(scores.T)),
    }


def candidate_ranks(scores: Tensor) -> Tensor:
    """Rank of every candidate (N,) -> (N,) long: 0 = best; ties keep sampling order, as `rerank.rank`."""
    order = torch.sort(scores, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order))
    return ranks


def top1_margin(scores: Tensor) -> float | None:
    """Best minus second-best score (>= 0); None for a single candidate."""
    if scores.numel() < 2:
        return None
    top = torch.topk(scores.double(), 2).values
    return float(top[0] - top[1])


def best_of_prefix(scores: Tensor, n: int) -> int:
    """Index of the chosen candidate among the first n (ties: the earliest)."""
    return int(torch.sort(scores[:n], descending=True, stable=True).indices[0])


def growth_stability(score_sets: Sequence[Tensor], grid: Sequence[int]) -> dict[str, Any]:
    """How often the best of the first n stays the best as n grows, over many nested candidate sets.

    score_sets: each (max(grid),) scores in sampling order (one per text and seed).
    Returns ``steps`` (consecutive grid pairs: fraction where the best of the first `from` is still the best
    of the first `to`) and ``vs_largest`` (per n: fraction where the best of n is the best of max(grid)).
    """
    grid = sorted(grid)
    largest = grid[-1]
    if not score_sets or any(s.numel() < largest for s in score_sets):
        raise ValueError(f"every score set needs at least {largest} scores")
    chosen = [[best_of_prefix(s, n) for n in grid] for s in score_sets]
    count = len(score_sets)
    steps = [
        {"from": grid[a], "to": grid[a + 1], "kept": sum(c[a] == c[a + 1] for c in chosen) / count, "count": count}
        for a in range(len(grid) - 1)
    ]
    vs_largest = [{"n": n, "same_as_largest": sum(c[a] == c[-1] for c in chosen) / count} for a, n in enumerate(grid)]
    return {"steps": steps, "vs_largest": vs_largest}


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_stability(chosen_codes: Sequence[Sequence[Tensor]], chosen_scores: Sequence[Sequence[float]],
                   chosen_lengths: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Agreement of the chosen candidate across seeds, per text (outer lists) over seeds (inner lists).

    identical_codes: fraction of (text, seed pair) where both seeds chose the same codes; score_std and
    length_std: mean over texts of the sample standard deviation over seeds.
    """
    pairs = same = 0
    for codes in chosen_codes:
        for a in range(len(codes)):
            for b in range(a + 1, len(codes)):
                pairs += 1
                same += bool(codes[a].shape == codes[b].shape and torch.equal(codes[a], codes[b]))
    texts = len(chosen_scores)
    return {
        "identical_codes": same / pairs if pairs else None,
        "score_std": sum(_std(s) for s in chosen_scores) / texts,
        "length_std": sum(_std([float(x) for x in lengths]) for lengths in chosen_lengths) / texts,
    }


# the run -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    """The benchmark's result: `data` is exactly what report.json holds, `markdown` what report.md holds."""

    data: dict[str, Any]
    markdown: str
    json_path: Path
    markdown_path: Path
    plot_paths: list[Path] = field(default_factory=list)


@dataclass
class _Run:  # one (text, seed) candidate set, kept in memory for the cross-text matrix and stability
    seed: int
    scores: Tensor
    lengths: Tensor
    raw_codes: Tensor
    fixed_codes: Tensor
    timings: dict[str, float]
    heard: HeardCandidates | None = None  # with a transcriber


def _wrap(error: TortoiseClvpError, where: str) -> TortoiseClvpError:
    wrapped = type(error)(f"{where}: {error}")
    wrapped.__cause__ = error
    return wrapped


def _plan(tts, entries: list[ManifestEntry], manifest: Path, largest: int,
          by_ear: bool = False) -> list[tuple[Tensor, DecodingOptions]]:
    """Tokenize every text and fit its options to the largest N, before any sampling (fail fast, with lines); by ear,
    also check that the models can make audio."""
    plans = []
    for entry in entries:
        where = _where(manifest, entry.line)
        try:
            options = dataclasses.replace(entry.options, num_candidates=largest)
            if sum(options.batch_sizes()) != largest:
                raise OptionsError(
                    f"drop_remainder with batch_size {options.batch_size} would sample fewer than {largest} "
                    "candidates; drop the option or use a batch_size that divides it"
                )
            text_ids = tts.check_text(entry.text, options)
            if by_ear:
                tts.check_generation(entry.voice, entry.preset)
        except TortoiseClvpError as error:
            raise _wrap(error, where) from error
        plans.append((text_ids, options))
    return plans


@torch.inference_mode()
def score_matrix(clvp, text_ids: Sequence[Tensor], codes: Sequence[Tensor]) -> Tensor:
    """CLVP scores of every text (T_i,) against every fixed candidate (L_j,) -> (texts, candidates) float."""
    device = clvp.temperature.device
    text = torch.cat([clvp.text_latents(ids.reshape(1, -1).to(device)) for ids in text_ids])  # (n, D)
    speech = torch.cat([clvp.speech_latents(c.reshape(1, -1).to(device)) for c in codes])  # (m, D)
    return clvp.score(text[:, None, :], speech[None, :, :]).float().cpu()  # (n, m)


def _mean_metrics(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        direction: {key: sum(m[direction][key] for m in per_seed) / len(per_seed) for key in per_seed[0][direction]}
        for direction in ("text_to_speech", "speech_to_text")
    }


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def run_rerank_benchmark(
    tts,
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    progress: Progress | None = None,
    clvp_batch_size: int = 16,
    metadata: Mapping[str, Any] | None = None,
    transcriber: Transcriber | None = None,
) -> Report:
    """Run the reranking benchmark on a manifest and write report.json, report.md and PNG plots into out_dir.

    tts: a loaded `TextToSpeech`. candidates: the grid of N (max(N) sampled once per text and seed, smaller N
    are its prefixes). seeds: sampling seeds. progress(stage, done, total) gets "sampling" after every
    (text, seed) and "retrieval" after every seed's matrix. metadata: extra facts for report.json's
    "environment" (e.g. system info). transcriber: score by ear (`eval.asr.Transcriber`, the `eval` extra): every
    candidate becomes audio and is transcribed (progress "by ear" after every text and seed), adding the report's
    "asr" part. Every file is written atomically. Returns the Report.
    """
    grid, seeds = check_grid(candidates, seeds)
    if clvp_batch_size < 1:
        raise OptionsError(f"clvp_batch_size must be >= 1, got {clvp_batch_size}")
    manifest = Path(manifest_path)
    entries = load_manifest(manifest)
    largest = grid[-1]
    plans = _plan(tts, entries, manifest, largest, by_ear=transcriber is not None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wall_start = time.perf_counter()

    conditionings: dict[tuple[Path, ...], Any] = {}
    conditioning_s: dict[tuple[Path, ...], float] = {}
    runs: list[list[_Run]] = []
    total = len(entries) * len(seeds)
    for index, (entry, (text_ids, options)) in enumerate(zip(entries, plans)):
        where = _where(manifest, entry.line)
        try:
            if entry.voice not in conditionings:
                start = time.perf_counter()
                conditionings[entry.voice] = tts.get_conditioning(entry.voice)
                conditioning_s[entry.voice] = time.perf_counter() - start
            text_runs = []
            for seed_index, seed in enumerate(seeds):
                conditioning = conditionings[entry.voice]
                result = tts.candidates(entry.text, conditioning, options, k=largest if transcriber else 1,
                                        seed=seed, clvp_batch_size=clvp_batch_size)
                heard = None
                if transcriber is not None:
                    diffusion = PRESETS[entry.preset or tts.default_preset].diffusion
                    heard = hear_candidates(tts, entry.text, conditioning, result, diffusion, transcriber)
                    if progress is not None:
                        progress("by ear", index * len(seeds) + seed_index + 1, total)
                text_runs.append(_Run(seed, result.ranked.scores.float(), result.lengths, result.raw_codes,
                                      result.ranked.codes, dict(result.timings), heard))
                if progress is not None:
                    progress("sampling", index * len(seeds) + seed_index + 1, total)
        except TortoiseClvpError as error:
            raise _wrap(error, where) from error
        runs.append(text_runs)

    # cross-text retrieval, one matrix per seed, on the chosen candidate of the largest N
    start = time.perf_counter()
    text_ids = [ids for ids, _ in plans]
    retrieval_per_seed = []
    for seed_index, seed in enumerate(seeds):
        chosen = [text_runs[seed_index] for text_runs in runs]
        codes = [run.fixed_codes[best_of_prefix(run.scores, largest)] for run in chosen]
        matrix = score_matrix(tts.models.clvp, text_ids, codes)
        retrieval_per_seed.append({"seed": seed, **retrieval_metrics(matrix), "scores": matrix.tolist()})
        if progress is not None:
            progress("retrieval", seed_index + 1, len(seeds))
    retrieval_s = time.perf_counter() - start

    data = _assemble(tts, manifest, entries, plans, runs, grid, seeds, retrieval_per_seed, conditioning_s,
                     clvp_batch_size, metadata)
    data["throughput"]["retrieval_s"] = retrieval_s
    data["throughput"]["wall_s"] = time.perf_counter() - wall_start
    plot_paths = _write_plots(data, out_dir)
    data["plots"] = [p.name for p in plot_paths] if plot_paths is not None else PLOTS_SKIPPED
    markdown = render_markdown(data)
    markdown_path = write_bytes_atomic(out_dir / "report.md", markdown.encode("utf-8"))
    json_path = write_bytes_atomic(out_dir / "report.json", (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    return Report(data, markdown, json_path, markdown_path, plot_paths or [])


def _assemble(tts, manifest, entries, plans, runs, grid, seeds, retrieval_per_seed, conditioning_s,
              clvp_batch_size, metadata) -> dict[str, Any]:
    largest = grid[-1]
    texts = []
    for entry, (text_ids, options), text_runs in zip(entries, plans, runs):
        run_rows = []
        for run in text_runs:
            chosen = best_of_prefix(run.scores, largest)
            length = int(run.lengths[chosen])
            by_n = []
            for n in grid:
                best = best_of_prefix(run.scores, n)
                by_n.append({
                    "n": n, "chosen": best, "score": _round(run.scores[best]),
                    "margin": _round(top1_margin(run.scores[:n])), "length": int(run.lengths[best]),
                    "same_as_largest": best == chosen,
                })
            run_rows.append({
                **({} if run.heard is None else {"asr": {
                    "transcripts": list(run.heard.transcripts), "seconds": [_round(x, 3) for x in run.heard.seconds],
                    "wer": [_round(x) for x in run.heard.errors.wer], "cer": [_round(x) for x in run.heard.errors.cer],
                    "audio_s": run.heard.audio_s, "asr_s": run.heard.asr_s,
                }}),
                "seed": run.seed,
                "candidates": int(run.scores.numel()),
                "scores": [_round(s) for s in run.scores.tolist()],
                "ranks": candidate_ranks(run.scores).tolist(),
                "lengths": run.lengths.tolist(),
                "chosen": chosen,
                "chosen_score": _round(run.scores[chosen]),
                "margin": _round(top1_margin(run.scores)),
                "chosen_length": length,
                "chosen_codes": run.raw_codes[chosen, :length].tolist(),
                "by_n": by_n,
                "timings": {
                    "sampling_s": run.timings.get("sampling", 0.0),
                    "scoring_s": run.timings.get("reranking", 0.0),
                    "latents_s": run.timings.get("latents", 0.0),
                },
            })
        texts.append({
            "id": entry.id,
            "line": entry.line,
            "text": entry.text,
            "voice": [str(p) for p in entry.voice],
            "text_tokens": int(text_ids.numel()),
            "options": dataclasses.asdict(options),
            "preset": entry.preset or tts.default_preset,
            "conditioning_s": conditioning_s.get(entry.voice, 0.0),
            "runs": run_rows,
        })

    flat_runs = [run for text_runs in runs for run in text_runs]
    best_by_n = []
    for n in grid:
        best_scores = [float(run.scores[best_of_prefix(run.scores, n)]) for run in flat_runs]
        margins = [m for m in (top1_margin(run.scores[:n]) for run in flat_runs) if m is not None]
        best_by_n.append({
            "n": n,
            "mean_best_score": sum(best_scores) / len(best_scores),
            "mean_margin": sum(margins) / len(margins) if margins else None,
        })
    across_seeds = []
    for n in grid:
        codes, scores, lengths = [], [], []
        for text_runs in runs:
            picks = [best_of_prefix(run.scores, n) for run in text_runs]
            codes.append([run.raw_codes[i] for run, i in zip(text_runs, picks)])
            scores.append([float(run.scores[i]) for run, i in zip(text_runs, picks)])
            lengths.append([int(run.lengths[i]) for run, i in zip(text_runs, picks)])
        across_seeds.append({"n": n, **seed_stability(codes, scores, lengths)})

    sampled = sum(int(run.scores.numel()) for run in flat_runs)
    sampling_s = sum(run.timings.get("sampling", 0.0) for run in flat_runs)
    scoring_s = sum(run.timings.get("reranking", 0.0) for run in flat_runs)
    tokens = sum(int(run.lengths.sum()) for run in flat_runs)
    retrieval_note = None if len(entries) >= 2 else "one text: retrieval is trivially perfect; use >= 2 texts"
    environment = {
        "torch": torch.__version__,
        "device": str(tts.device),
        "torch_threads": torch.get_num_threads(),
        **(dict(metadata) if metadata else {}),
    }
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": str(manifest),
        "environment": environment,
        "grid": {"candidates": list(grid), "seeds": list(seeds), "clvp_batch_size": clvp_batch_size},
        "design": {
            "nested": f"{largest} candidates sampled once per text and seed in the manifest's batch_size; "
                      "smaller N are prefixes of that set (same distribution as a fresh run, not bit-identical)",
            "conditioning": "computed once per voice by TextToSpeech.get_conditioning (the fixed crop seed) and "
                            "shared by every seed",
            "candidate_ranks": "0 = best; ties keep sampling order",
            "retrieval_tie_rule": "ties count against the true pair: p_i = #{j != i : s_ij >= s_ii}",
        },
        "texts": texts,
        "retrieval": {
            "texts": len(entries),
            "candidates": largest,
            "definition": "LAION CLAP: p = 0-based rank of the true pair in its row sorted descending; "
                          "mean_rank = mean(p)+1, median_rank = floor(median(p))+1, R@k = mean(p<k), "
                          "mAP@10 = mean(1/(p+1) if p<10 else 0); rows = texts, columns = each text's chosen "
                          "candidate",
            "note": retrieval_note,
            "mean": _mean_metrics(retrieval_per_seed),
            "per_seed": retrieval_per_seed,
        },
        "stability": {
            "growing_n": growth_stability([run.scores for run in flat_runs], grid),
            "best_by_n": best_by_n,
            "across_seeds": across_seeds if len(seeds) > 1 else None,
        },
        "asr": _by_ear(entries, runs, grid),
        "throughput": {
            "candidates_sampled": sampled,
            "speech_tokens_sampled": tokens,
            "sampling_s": sampling_s,
            "sampling_candidates_per_s": sampled / sampling_s if sampling_s > 0 else None,
            "sampling_tokens_per_s": tokens / sampling_s if sampling_s > 0 else None,
            "candidates_scored": sampled,
            "scoring_s": scoring_s,
            "scoring_candidates_per_s": sampled / scoring_s if scoring_s > 0 else None,
            "conditioning_s": sum(conditioning_s.values()),
            "latents_s": sum(run.timings.get("latents", 0.0) for run in flat_runs),
        },
    }


def _by_ear(entries, runs, grid) -> dict[str, Any] | None:
    """The report's "asr" part (None when the run was not scored by ear)."""
    if runs[0][0].heard is None:
        return None
    flat = [run.heard for text_runs in runs for run in text_runs]
    return {
        "definition": "per candidate: WER and CER of its transcript (normalised); per N over the first N candidates: "
                      "clvp = CLVP's top-1, random = mean over the N, oracle = lowest WER (then CER); averaged over "
                      "texts and seeds. spearman: per text, CLVP score vs WER over all its candidates (negative = "
                      "CLVP prefers what the ASR understands)",
        "best_of_n": [{k: _round(v) if k != "n" else v for k, v in row.items()}
                      for row in best_of_n_rows([h.errors for h in flat], grid)],
        "spearman": [{"id": entry.id, "rho": _round(text_correlation([run.heard.errors for run in text_runs]))}
                     for entry, text_runs in zip(entries, runs)],
        "audio_s": sum(h.audio_s for h in flat),
        "asr_s": sum(h.asr_s for h in flat),
        "audio_seconds": sum(sum(h.seconds) for h in flat),
    }


# output ------------------------------------------------------------------------------------------------------------
def markdown_cell(value: Any, digits: int = 3) -> str:
    """One value as Markdown table text: floats to `digits` places, None as '-', booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3, left: int = 1) -> str:
    """A GitHub-flavoured Markdown table; floats to `digits` places, None as '-'; the first `left` columns are
    left-aligned, the rest right-aligned."""
    align = ["---"] * left + ["---:"] * (len(headers) - left)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(markdown_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(data: Mapping[str, Any]) -> str:
    """The report's Markdown: per-text table, retrieval, stability, throughput."""
    largest = data["grid"]["candidates"][-1]
    per_text = []
    for text in data["texts"]:
        short = text["text"] if len(text["text"]) <= 40 else text["text"][:37] + "..."
        for run in text["runs"]:
            per_text.append([
                text["id"], short, text["text_tokens"], run["seed"], run["candidates"], run["chosen"],
                run["chosen_score"], run["margin"], run["chosen_length"], run["timings"]["sampling_s"],
                run["timings"]["scoring_s"],
            ])
    retrieval = data["retrieval"]
    seed_count = len(retrieval["per_seed"])
    keys = ["mean_rank", "median_rank", *(f"R@{k}" for k in RECALL_KS), f"mAP@{MAP_K}"]
    retrieval_rows = [
        [f"{name} (mean over {seed_count} seed{'s' if seed_count != 1 else ''})",
         *(retrieval["mean"][direction][k] for k in keys)]
        for direction, name in (("text_to_speech", "text -> speech"), ("speech_to_text", "speech -> text"))
    ]
    stability = data["stability"]
    across = {row["n"]: row for row in stability["across_seeds"] or []}
    stability_rows = [
        [row["n"], vs["same_as_largest"], row["mean_best_score"], row["mean_margin"],
         across.get(row["n"], {}).get("identical_codes"), across.get(row["n"], {}).get("score_std"),
         across.get(row["n"], {}).get("length_std")]
        for row, vs in zip(stability["best_by_n"], stability["growing_n"]["vs_largest"])
    ]
    steps = ", ".join(f"{s['from']} -> {s['to']}: {s['kept']:.2f}" for s in stability["growing_n"]["steps"]) or "-"
    t = data["throughput"]
    throughput_rows = [
        ["sampling", t["candidates_sampled"], t["sampling_s"], t["sampling_candidates_per_s"]],
        ["scoring", t["candidates_scored"], t["scoring_s"], t["scoring_candidates_per_s"]],
    ]
    plots = data.get("plots")
    parts = [
        "# CLVP reranking benchmark",
        f"Manifest `{data['manifest']}`: {len(data['texts'])} texts, candidates {data['grid']['candidates']}, "
        f"seeds {data['grid']['seeds']}, device {data['environment']['device']}. Smaller N are prefixes of the "
        f"{largest} sampled per text and seed. Scores mean what the weights mean.",
        "## Per text (largest N)",
        markdown_table(["id", "text", "text tokens", "seed", "N", "chosen", "score", "margin", "speech tokens",
                        "sampling s", "scoring s"], per_text, left=2),
        "## Retrieval (CLVP score matrix: every text vs every text's chosen candidate)",
        markdown_table(["direction", "mean rank", "median rank", "R@1", "R@5", "R@10", "mAP@10"], retrieval_rows),
        *( [f"Note: {retrieval['note']}"] if retrieval.get("note") else []),
        "## Stability",
        markdown_table(["N", "top-1 = top-1 of largest N", "mean best score", "mean margin",
                        "same codes across seeds", "best score std (seeds)", "length std (seeds)"], stability_rows),
        f"Top-1 kept as N grows: {steps}.",
        "## Throughput",
        markdown_table(["stage", "candidates", "seconds", "candidates/s"], throughput_rows, digits=2),
        *_by_ear_markdown(data.get("asr")),
        "## Plots",
        ", ".join(f"![{p}]({p})" for p in plots) if isinstance(plots, list) else str(plots),
    ]
    return "\n\n".join(parts) + "\n"


def _by_ear_markdown(asr: Mapping[str, Any] | None) -> list[str]:
    if asr is None:
        return []
    rows = [[r["n"], r["wer_clvp"], r["wer_random"], r["wer_oracle"], r["cer_clvp"], r["cer_random"], r["cer_oracle"]]
            for r in asr["best_of_n"]]
    return [
        "## By ear (ASR): best of N",
        markdown_table(["N", "WER clvp", "WER random", "WER oracle", "CER clvp", "CER random", "CER oracle"], rows),
        "clvp: CLVP's top-1 of the first N; random: the mean over them; oracle: the ASR-best of them.",
        markdown_table(["text", "Spearman (CLVP score, WER)"], [[s["id"], s["rho"]] for s in asr["spearman"]]),
        f"Audio: {asr['audio_seconds']:.1f} s made in {asr['audio_s']:.1f} s, transcribed in {asr['asr_s']:.1f} s.",
    ]


def _write_plots(data: Mapping[str, Any], out_dir: Path) -> list[Path] | None:
    """scores.png, retrieval.png, stability.png; None when matplotlib is not installed."""
    try:
        from matplotlib.figure import (
            Figure,  # the object API: no pyplot, no global backend switch
        )
    except ImportError:
        return None

    def save(fig, name: str) -> Path:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        return write_bytes_atomic(out_dir / name, buffer.getvalue())

    texts = data["texts"]
    seeds = data["grid"]["seeds"]
    grid = data["grid"]["candidates"]
    labels = [t["id"] for t in texts]
    paths = []

    fig = Figure(figsize=(max(5.0, 1.2 * len(texts) + 2), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.6 / max(1, len(seeds))
    for s, seed in enumerate(seeds):
        xs, ys, best_x, best_y = [], [], [], []
        for i, text in enumerate(texts):
            run = text["runs"][s]
            x = i + (s - (len(seeds) - 1) / 2) * width
            xs += [x] * len(run["scores"])
            ys += run["scores"]
            best_x.append(x)
            best_y.append(run["chosen_score"])
        points = ax.scatter(xs, ys, s=10, alpha=0.5, label=f"seed {seed}")
        ax.scatter(best_x, best_y, s=80, marker="*", color=points.get_facecolor()[0], edgecolors="black")
    ax.set_xticks(list(range(len(texts))))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("CLVP score")
    ax.set_title(f"Candidate scores ({grid[-1]} per text and seed; star = chosen)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(save(fig, "scores.png"))

    first = data["retrieval"]["per_seed"][0]
    fig = Figure(figsize=(max(4.5, 0.5 * len(texts) + 3), max(4.0, 0.5 * len(texts) + 2)))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(first["scores"], cmap="viridis")
    fig.colorbar(image, ax=ax, label="CLVP score")
    ax.set_xticks(list(range(len(texts))))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticks(list(range(len(texts))))
    ax.set_yticklabels(labels)
    ax.set_xlabel("chosen candidate of text")
    ax.set_ylabel("text")
    ax.set_title(f"Text vs speech scores (seed {first['seed']})")
    fig.tight_layout()
    paths.append(save(fig, "retrieval.png"))

    stability = data["stability"]
    fig = Figure(figsize=(9.0, 3.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    positions = list(range(len(grid)))
    left.plot(positions, [row["same_as_largest"] for row in stability["growing_n"]["vs_largest"]], marker="o")
    left.set_ylim(-0.05, 1.05)
    left.set_ylabel(f"top-1 of N = top-1 of {grid[-1]}")
    right.plot(positions, [row["mean_best_score"] for row in stability["best_by_n"]], marker="o", color="black",
               label="mean")
    for text in texts:
        for run in text["runs"]:
            right.plot(positions, [row["score"] for row in run["by_n"]], alpha=0.3, linewidth=0.8)
    right.set_ylabel("best-of-N CLVP score")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.set_xticks(positions)
        ax.set_xticklabels([str(n) for n in grid])
        ax.set_xlabel("N (candidates)")
    fig.tight_layout()
    paths.append(save(fig, "stability.png"))

    if data.get("asr") is not None:
        paths.append(save(best_of_n_figure(data["asr"]["best_of_n"], Figure), "asr_best_of_n.png"))
    return paths


def best_of_n_figure(rows: Sequence[Mapping[str, Any]], Figure: Any, title: str = "Best of N by ear") -> Any:
    """WER against N (log scale) for CLVP's pick, a random pick and the ASR-best, from `best_of_n_rows` rows;
    `Figure` is matplotlib's (passed in, so matplotlib stays optional)."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for choice, style in (("clvp", "o-"), ("random", "s--"), ("oracle", "^:")):
        ax.plot([row["n"] for row in rows], [row[f"wer_{choice}"] for row in rows], style, label=choice)
    ax.set_xscale("log", base=2)
    ax.set_xticks([row["n"] for row in rows], [str(row["n"]) for row in rows])
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("WER (mean over texts and seeds)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
