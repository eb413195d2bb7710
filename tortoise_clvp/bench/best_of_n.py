"""Best-of-N by ear: how much CLVP's pick beats a random candidate, measured by an independent ASR.

Every candidate of a (text, seed) set is decoded to audio and transcribed; its word and character error rates are
its own (edit distance over the reference's words or characters, after `eval.asr.normalize`). For each N of a grid,
over the first N candidates in sampling order (the nested sets of the reranking report):

- clvp: the error of CLVP's top-1 (highest score; ties go to the earliest candidate, as `rerank.rank` breaks them);
- random: the mean error over the N (what picking one at random gets on average);
- oracle: the error of the ASR-best candidate (lowest WER; ties broken by lower CER, then the earliest), the ceiling
  any reranker could reach with these N. Its CER is that candidate's CER, not the lowest CER of the N.

Each is averaged over every (text, seed) set with equal weight. The rank correlation (Spearman, average ranks for
ties) between CLVP score and WER is computed per text over all its candidates of every seed: a reranker that helps
has a negative one (higher score, fewer errors); it is None where either side is constant.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from torch import Tensor

from ..eval.asr import edit_distance, normalize
from ..frontend.mel import OUTPUT_SAMPLE_RATE


class Transcriber(Protocol):
    """What the benchmark needs of an ASR (`eval.asr.Transcriber` is the real one)."""

    def transcribe(self, audio: Tensor, sample_rate: int) -> str: ...


@dataclass(frozen=True)
class CandidateErrors:
    """One (text, seed) candidate set in sampling order: CLVP scores and each candidate's own WER and CER."""

    scores: tuple[float, ...]
    wer: tuple[float, ...]
    cer: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.scores or not len(self.scores) == len(self.wer) == len(self.cer):
            raise ValueError(
                f"need as many scores, WERs and CERs (at least one); got {len(self.scores)}, {len(self.wer)}, "
                f"{len(self.cer)}"
            )
        if not all(math.isfinite(v) for v in (*self.scores, *self.wer, *self.cer)):
            raise ValueError("scores and error rates must be finite numbers")


def utterance_errors(reference: str, transcript: str) -> tuple[float, float]:
    """One utterance's (WER, CER) after normalisation of both sides; an empty reference counts as one word/char."""
    ref, hyp = normalize(reference), normalize(transcript)
    words = ref.split()
    return (edit_distance(words, hyp.split()) / max(len(words), 1), edit_distance(ref, hyp) / max(len(ref), 1))


def clvp_pick(scores: Sequence[float], n: int) -> int:
    """Index of CLVP's top-1 among the first n (ties: the earliest)."""
    best = 0
    for index in range(1, n):
        if scores[index] > scores[best]:
            best = index
    return best


def oracle_pick(wer: Sequence[float], cer: Sequence[float], n: int) -> int:
    """Index of the ASR-best among the first n: lowest WER, then lowest CER, then the earliest."""
    return min(range(n), key=lambda index: (wer[index], cer[index], index))


def best_of_n_rows(sets: Sequence[CandidateErrors], grid: Sequence[int]) -> list[dict[str, Any]]:
    """Rows {n, wer_clvp, wer_random, wer_oracle, cer_clvp, cer_random, cer_oracle} per N of the grid (ascending),
    each averaged over the sets; every set needs at least max(grid) candidates."""
    grid = sorted(set(grid))
    if not sets or not grid or grid[0] < 1:
        raise ValueError(f"need at least one candidate set and candidate counts >= 1, got {len(sets)} sets, grid {grid}")
    short = [len(s.scores) for s in sets if len(s.scores) < grid[-1]]
    if short:
        raise ValueError(f"every set needs {grid[-1]} candidates; some have only {min(short)}")
    rows = []
    for n in grid:
        sums = dict.fromkeys(("wer_clvp", "wer_random", "wer_oracle", "cer_clvp", "cer_random", "cer_oracle"), 0.0)
        for s in sets:
            chosen, best = clvp_pick(s.scores, n), oracle_pick(s.wer, s.cer, n)
            for metric, errors in (("wer", s.wer), ("cer", s.cer)):
                sums[f"{metric}_clvp"] += errors[chosen]
                sums[f"{metric}_random"] += sum(errors[:n]) / n
                sums[f"{metric}_oracle"] += errors[best]
        rows.append({"n": n, **{key: value / len(sets) for key, value in sums.items()}})
    return rows


@dataclass(frozen=True)
class PickGain:
    """How much CLVP's pick of N lowers an error rate against a random pick, with texts as the independent units."""

    n: int
    metric: str
    texts: int
    clvp: float
    random: float
    difference: float  # clvp - random, the mean over texts of each text's mean over its seeds: negative helps
    low: float  # the 95 % interval of `difference` (normal approximation over texts; zero width for one text)
    high: float

    @property
    def relative(self) -> float:
        """The difference as a share of the random pick's error (-0.1: CLVP's pick has 10 % fewer errors)."""
        return self.difference / self.random if self.random else 0.0


def pick_gain(sets_by_text: Sequence[Sequence[CandidateErrors]], n: int, metric: str = "wer") -> PickGain:
    """CLVP's pick of the first `n` against a random one of them: a text's seeds are averaged first (they share the
    text and the reference, so they are not independent), then the texts, whose spread gives the interval."""
    if metric not in ("wer", "cer"):
        raise ValueError(f"metric must be 'wer' or 'cer', got {metric!r}")
    if not sets_by_text or not all(sets_by_text):
        raise ValueError("need at least one text, each with at least one candidate set")
    pairs = []
    for sets in sets_by_text:
        chosen = random = 0.0
        for s in sets:
            if len(s.scores) < n:
                raise ValueError(f"every set needs {n} candidates; one has only {len(s.scores)}")
            errors = getattr(s, metric)
            chosen += errors[clvp_pick(s.scores, n)]
            random += sum(errors[:n]) / n
        pairs.append((chosen / len(sets), random / len(sets)))
    mean, low, high = mean_interval([c - r for c, r in pairs])
    return PickGain(n, metric, len(pairs), statistics.fmean(c for c, _ in pairs),
                    statistics.fmean(r for _, r in pairs), mean, low, high)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of independent values and its 95 % interval by the normal approximation
    (1.96 standard errors); zero width for a single value."""
    if not values:
        raise ValueError("need at least one value")
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, mean - half, mean + half


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ascending; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda index: values[index])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None for fewer than 2 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"need paired values, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def text_correlation(sets: Sequence[CandidateErrors]) -> float | None:
    """Spearman between CLVP score and WER over every candidate of one text's sets (all its seeds)."""
    return spearman([v for s in sets for v in s.scores], [v for s in sets for v in s.wer])


@dataclass(frozen=True)
class NoiseSplit:
    """How much of the spread of single takes' error rates is the candidates' own (their codes) and how much the
    audio's noise adds (the diffusion noise seed, and the ASR's reaction to it), and what that leaves a code ranker.

    code_variance and noise_variance are one-way random-effects estimates, averaged over the sets: noise_variance is
    the variance of one candidate's error over noise seeds; code_variance is the variance over candidates of their
    mean error less the noise that mean still holds (noise_variance / seeds), floored at 0. code_share is
    code_variance / (code_variance + noise_variance): the part of a take's error a perfect code ranker could know.

    On the first noise seed (the one a run records): random is the mean error over the candidates; code_ranker is the
    error of the candidate best on average over the OTHER seeds (a code ranker that knows each candidate's quality as
    well as those seeds tell it: what a perfect one gains at least); oracle is the lowest error (the ASR-best, which
    also picks the luckiest noise)."""

    sets: int
    candidates: int
    seeds: int
    code_variance: float
    noise_variance: float
    code_share: float
    random: float
    code_ranker: float
    oracle: float


def noise_split(tables: Sequence[Sequence[Sequence[float]]]) -> NoiseSplit:
    """tables[set][candidate][seed]: one error rate per candidate and noise seed (seed 0 first), every set with the
    same number (at least 2) of candidates and of seeds."""
    if not tables:
        raise ValueError("need at least one set of candidates")
    candidates, seeds = len(tables[0]), len(tables[0][0]) if tables[0] else 0
    if candidates < 2 or seeds < 2 or any(len(t) != candidates or any(len(r) != seeds for r in t) for t in tables):
        raise ValueError("every set needs the same number (at least 2) of candidates, each with the same number "
                         f"(at least 2) of noise seeds; the first set has {candidates} x {seeds}")
    code = noise = random = ranker = oracle = 0.0
    for table in tables:
        within = sum(statistics.variance(row) for row in table) / candidates
        means = [sum(row) / seeds for row in table]
        noise += within
        code += max(statistics.variance(means) - within / seeds, 0.0)
        first = [row[0] for row in table]
        random += sum(first) / candidates
        oracle += min(first)
        held_out = [sum(row[1:]) / (seeds - 1) for row in table]
        ranker += first[min(range(candidates), key=lambda i: (held_out[i], i))]
    n = len(tables)
    code, noise = code / n, noise / n
    share = code / (code + noise) if code + noise > 0 else 0.0
    return NoiseSplit(n, candidates, seeds, code, noise, share, random / n, ranker / n, oracle / n)


@dataclass(frozen=True)
class HeardCandidates:
    """One (text, seed) set as the ASR heard it, in sampling order: transcripts, audio lengths and error rates."""

    transcripts: tuple[str, ...]
    seconds: tuple[float, ...]
    errors: CandidateErrors
    audio_s: float  # making the audio, every candidate
    asr_s: float


def sampling_order_latents(result) -> list[Tensor]:
    """The decoder latents of every candidate of a `CandidateResult` (made with k = all of them), in sampling order
    (the result holds them best first)."""
    order = result.best.tolist()
    if len(order) != len(result.ranked.scores):
        raise ValueError(f"{len(order)} of {len(result.ranked.scores)} candidates have latents; rank with k = all")
    latents: list[Tensor] = [result.latents[0]] * len(order)
    for latent, index in zip(result.latents, order):
        latents[index] = latent
    return latents


def candidate_audio(tts, conditioning, result, diffusion) -> list[Tensor]:
    """Every candidate of a `CandidateResult` (made with k = all of them) as 24 kHz audio, in sampling order.

    Each candidate's audio is what `generate` makes of it with the run's seed had CLVP chosen it
    (`TextToSpeech.waveforms` on its latents alone, `diffusion` the sampler options), so it does not depend on the
    other candidates.
    """
    latents = sampling_order_latents(result)
    return [tts.waveforms([latent], conditioning, diffusion, result.seed)[0] for latent in latents]


def hear(text: str, scores: Tensor, waves: Sequence[Tensor], sample_rate: int, transcriber: Transcriber,
         audio_s: float = 0.0) -> HeardCandidates:
    """Transcribe a candidate set's audio (sampling order) and score each transcript against `text`."""
    start = time.perf_counter()
    transcripts = tuple(transcriber.transcribe(wave, sample_rate) for wave in waves)
    asr_s = time.perf_counter() - start
    errors = [utterance_errors(text, transcript) for transcript in transcripts]
    scored = CandidateErrors(tuple(float(s) for s in scores.tolist()), tuple(e[0] for e in errors),
                             tuple(e[1] for e in errors))
    return HeardCandidates(transcripts, tuple(wave.shape[-1] / sample_rate for wave in waves), scored, audio_s, asr_s)


def hear_candidates(tts, text: str, conditioning, result, diffusion, transcriber: Transcriber) -> HeardCandidates:
    """`candidate_audio`, then `hear`: the whole set decoded to audio and transcribed."""
    start = time.perf_counter()
    waves = candidate_audio(tts, conditioning, result, diffusion)
    return hear(text, result.ranked.scores, waves, OUTPUT_SAMPLE_RATE, transcriber, time.perf_counter() - start)
