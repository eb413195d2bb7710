"""Best of N by ear, early pruning and int8 quantization: what reranking buys and how much work can be skipped.

Five commands, run separately:

``speed`` (full-size random weights; measures compute only, nothing about speech):
- pruning: `pipeline.pruning.sample_pruned` unpruned vs pruned (checkpoint ``--checkpoint`` tokens, ``--keep`` of the
  candidates finished) and the library's usual `decoding.sample_candidates`, ``--candidates`` candidates in batches
  of ``--batch-size``, lengths forced (min = max = ``--tokens``, so every row runs to the end, the worst case for
  the unpruned run and the same work on every side); interleaved repeats; decode batch-steps counted too. The kept
  candidates' tokens are compared with the unpruned run's.
- int8: the decoder's 16-row sampling step, oneDNN-packed float32 (what `from_local` runs) vs int8
  (`models.quantize`), interleaved; agreement of the next-token argmax on teacher-forced random codes and of whole
  sampled candidates (row-keyed draws, same seed); CLVP scoring of ``--candidates`` random candidates, float32 vs
  int8: time, Spearman of the scores and top-1 agreement.

``quality WORK_DIR`` (a trained model: WORK_DIR/export, or ``--models-dir``): held-out (valid) sentences of the
training corpus, each spoken in its voice (a training clip of that voice as the reference), ``--seeds`` seeds.
Per sentence and seed, max(``--candidates``) candidates are sampled once (row-keyed draws, as the pruned runs) and
every one is decoded to audio (candidates sampled with ``--preset``'s decoder sampling, default the model's own
preset, and diffused with its sampler, or, for a model without a diffusion decoder,
``--audio preview``: the DVAE decoder and Griffin-Lim) and transcribed by Whisper tiny.en (the eval extra). Then:
- best of N (`bench.best_of_n`): WER/CER of CLVP's pick, a random pick and the ASR-best, per N; Spearman per text;
- pruning replayed for every ``--prune-at`` x ``--prune-keep`` x score (logprob, clvp): which candidates a cut keeps
  is computed from the unpruned run (exact for logprob: `mean_logprob`; CLVP on the same prefixes), CLVP's pick among
  them, its WER, agreement with the unpruned pick, and the decode batch-steps it saves. One real pruned run per
  sentence and seed (the first setting) checks the replay and is timed against the unpruned run;
- int8 (``--int8``): the same sentences with the decoder and CLVP quantized: WER of CLVP's pick of N, agreement;
- presets (with a diffusion decoder): WER and diffusion time of the sampler presets on CLVP's pick of 16.
The run writes its items to ``--out`` after every sentence and resumes: started again with the same arguments
(``--threads`` and ``--shard`` aside) on the same model files, it keeps the (sentence, seed) items already there and
runs the rest. ``--shard K/M`` runs only every M-th sentence from the K-th (0-based), so M processes or machines share
one run: give each its own ``--out`` (a copy of a partial run's file, to keep what it already has) and join them
with ``merge``.

``rescore QUALITY_JSON`` (a quality run): how CLVP's layout of the candidates, or another CLVP (``--clvp``), changes
its picks. Every
(sentence, seed) of the run is sampled again (same model, seed and row-keyed draws: the scores of the candidates
in the model's own layout, as the run scored them, must equal the run's, which proves they are the same
candidates) and scored with `ClvpConfig.score_padding` = each of ``--paddings`` (``none``: every sampled position,
as the original), by the run's CLVP or ``--clvp``'s. The run's WER/CER per candidate are reused, so no audio is
made: best of N and Spearman per layout, and the scoring time.

``noise QUALITY_JSON`` (a quality run whose audio came from the diffusion decoder): how much of a single take's
WER/CER is its codes and how much the audio's noise. The first ``--items`` items of the run are sampled again (checked
as ``rescore`` checks them); each of their first ``--candidates`` candidates is diffused with the run's seed and
``--noise-seeds`` - 1 others (the run's seed + 1000, + 2000, ...) and transcribed. `bench.best_of_n.noise_split`
gives the share of the error variance that is the candidates' own (what any code-level ranker, such as CLVP, can
see), and, on the run's seed, a random pick, the candidate best on the other seeds (what a ranker that knows each
candidate's quality gains at least) and the ASR-best. How many candidates' errors at the run's seed equal the run's
is reported too (the same audio heard again; thread counts change float rounding, and that alone can change a take).

``merge QUALITY_JSON ... --out FILE``: the shards of one quality run (same arguments and model files) as one run:
their (sentence, seed) items, each once (in the order of the files given), and the tables made again. Both
commands also draw WER against N (the JSON's name with .png) when matplotlib is installed.

Usage: python benchmarks/best_of_n.py speed [--candidates 32] [--batch-size 16] [--tokens 96] [--checkpoint 24]
         [--keep 0.25] [--repeats 2] [--threads 2] [--out benchmarks/results/best_of_n_speed.json]
       python benchmarks/best_of_n.py quality WORK_DIR [--models-dir DIR] [--sentences 100] [--seeds 0,1]
         [--exclude-trained-on OTHER_WORK_DIR ...] [--min-reference-seconds 2]
         [--candidates 1,2,4,8,16,32] [--max-new-tokens 300] [--audio auto|diffusion|preview] [--preset NAME]
         [--prune-at 16,32,64] [--prune-keep 0.25,0.5] [--int8] [--shard K/M] [--threads 2]
         [--out benchmarks/results/best_of_n_quality.json]
       python benchmarks/best_of_n.py merge QUALITY_JSON ... --out FILE
       python benchmarks/best_of_n.py rescore QUALITY_JSON [--models-dir DIR] [--clvp DIR] [--paddings none,0,8,32,64]
         [--out benchmarks/results/best_of_n_rescore.json]
       python benchmarks/best_of_n.py noise QUALITY_JSON [--models-dir DIR] [--items 12] [--candidates 8]
         [--noise-seeds 4] [--threads 2] [--out benchmarks/results/best_of_n_noise.json]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import finish, format_table, load_average, result_header, timed, write_json_atomic  # noqa: E402

from tortoise_clvp.bench.best_of_n import (  # noqa: E402
    CandidateErrors,
    best_of_n_rows,
    candidate_audio,
    clvp_pick,
    hear,
    mean_interval,
    noise_split,
    pick_gain,
    sampling_order_latents,
    spearman,
    text_correlation,
    utterance_errors,
)
from tortoise_clvp.config import AutoregressiveConfig, ClvpConfig  # noqa: E402
from tortoise_clvp.models.autoregressive import AutoregressiveModel  # noqa: E402
from tortoise_clvp.models.clvp import ClvpModel  # noqa: E402
from tortoise_clvp.models.packed_linear import pack_linears  # noqa: E402
from tortoise_clvp.models.quantize import quantize_linears  # noqa: E402
from tortoise_clvp.pipeline.decoding import DecodingOptions, sample_candidates  # noqa: E402
from tortoise_clvp.pipeline.pruning import PruneOptions, mean_logprob, sample_pruned  # noqa: E402
from tortoise_clvp.pipeline.rerank import score_candidates  # noqa: E402
from tortoise_clvp.pipeline.trimming import fix_speech_decoder_output, scoring_span  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEXT_IDS = 39  # + the appended 0: a ~60-character sentence
PRUNE_SCORES = ("logprob", "clvp")
PRESET_SAMPLERS = ("standard", "fast", "fast_dpm", "ultra_fast_dpm", "ultra_fast_ddim")  # p 200 / p 80 / dpm++2m 20 / 10 / ddim 4
PRESET_N = 16  # presets are compared on CLVP's pick of this many
NOISE_SEED_STEP = 1000  # the noise part's extra diffusion seeds: the run's seed + 1000, + 2000, ...


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


# speed (full-size random weights) ---------------------------------------------------------------------------------
def _random_inputs(seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.cat([torch.randint(1, 255, (TEXT_IDS,), generator=generator), torch.tensor([0])])
    return torch.randn(AutoregressiveConfig.RELEASED.model_dim, generator=generator) * 0.1, text


def _interleaved(cells: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Each cell (name -> callable) once untimed, then `repeats` rounds in a rotating order; seconds per call."""
    for fn in cells.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cells}
    names = list(cells)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            times[name].append(timed(cells[name])[0])
    return times


def _summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def speed_pruning(decoder: AutoregressiveModel, args: argparse.Namespace) -> dict[str, Any]:
    cond, text = _random_inputs(args.seed)
    options = DecodingOptions(num_candidates=args.candidates, batch_size=args.batch_size, max_new_tokens=args.tokens,
                              min_new_tokens=args.tokens)
    prune = PruneOptions(at_tokens=args.checkpoint, keep=args.keep)
    outputs: dict[str, Any] = {}

    def run(name: str, prune_options: PruneOptions | None):
        def call():
            outputs[name] = sample_pruned(decoder, cond, text, options, prune_options, torch.Generator().manual_seed(1))
        return call

    cells = {
        "sample_candidates": lambda: sample_candidates(decoder, cond, text, options, torch.Generator().manual_seed(1)),
        "unpruned (row-keyed)": run("unpruned", None),
        "pruned": run("pruned", prune),
    }
    times = _interleaved(cells, args.repeats)
    unpruned, pruned = outputs["unpruned"], outputs["pruned"]
    same_rows = sum(torch.equal(a, b) for a, b in zip(pruned.codes, unpruned.codes[pruned.kept]))
    steps = {"sample_candidates": len(options.batch_sizes()) * (args.tokens - 1),
             "unpruned (row-keyed)": unpruned.steps, "pruned": pruned.steps}
    base = statistics.median(times["unpruned (row-keyed)"])
    return {
        "options": {"candidates": args.candidates, "batch_size": args.batch_size, "tokens": args.tokens,
                    "checkpoint": args.checkpoint, "keep": args.keep, "kept": len(pruned.kept)},
        "cells": {name: {**_summary(t), "batch_steps": steps[name],
                         "time_vs_unpruned": statistics.median(t) / base} for name, t in times.items()},
        "kept_rows_identical": same_rows,
        "kept_rows": len(pruned.kept),
    }


@torch.inference_mode()
def speed_int8_decoder(plain: AutoregressiveModel, packed: AutoregressiveModel, args: argparse.Namespace) -> dict:
    quantized = copy.deepcopy(plain)
    quantize_linears(quantized)
    cond, text = _random_inputs(args.seed)
    tokens = args.int8_tokens
    options = DecodingOptions(num_candidates=16, batch_size=16, max_new_tokens=tokens, min_new_tokens=tokens)
    cells = {name: (lambda model=model: sample_candidates(model, cond, text, options, torch.Generator().manual_seed(1)))
             for name, model in (("float32 packed", packed), ("int8", quantized))}
    times = _interleaved(cells, args.repeats)
    # next-token argmax agreement on teacher-forced random codes (4 sequences of 64)
    codes = torch.randint(0, 8192, (4, 64), generator=torch.Generator().manual_seed(args.seed + 1))
    conds = cond.expand(4, -1)
    texts = text.expand(4, -1)
    logits = {}
    for name, model in (("float32", packed), ("int8", quantized)):
        logits[name] = model.mel_head(model.teacher_forced(conds, texts, codes)[1])  # (4, 66, V)
    agree = (logits["float32"].argmax(-1) == logits["int8"].argmax(-1)).double().mean()
    drift = ((logits["float32"] - logits["int8"]).abs().mean() / logits["float32"].std()).item()
    # whole candidates, row-keyed draws with one seed: how far do they stay identical?
    sampled = {name: sample_pruned(model, cond, text, DecodingOptions(num_candidates=16, batch_size=16,
                                                                     max_new_tokens=tokens, min_new_tokens=tokens),
                                   None, torch.Generator().manual_seed(2)).codes
               for name, model in (("float32", packed), ("int8", quantized))}
    differs = sampled["float32"] != sampled["int8"]
    first = torch.where(differs.any(1), differs.int().argmax(1), torch.full((16,), tokens))
    base = statistics.median(times["float32 packed"])
    return {
        "tokens": tokens,
        "cells": {name: {**_summary(t), "per_token_ms": 1000 * statistics.median(t) / tokens,
                         "time_vs_float32": statistics.median(t) / base} for name, t in times.items()},
        "teacher_forced_top1_agreement": float(agree),
        "mean_abs_logit_change_over_std": drift,
        "sampled_identical_candidates": int((~differs.any(1)).sum()),
        "sampled_mean_first_difference": float(first.double().mean()),
    }


@torch.inference_mode()
def speed_int8_clvp(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    plain = ClvpModel(ClvpConfig.RELEASED).eval()
    quantized = copy.deepcopy(plain)
    quantize_linears(quantized)
    generator = torch.Generator().manual_seed(args.seed + 2)
    codes = torch.randint(0, 8192, (args.candidates, args.clvp_codes), generator=generator)
    _, text = _random_inputs(args.seed)
    scores: dict[str, Tensor] = {}

    def cell(name, model):
        def call():
            scores[name] = score_candidates(model, text, codes, batch_size=16)
        return call

    times = _interleaved({"float32": cell("float32", plain), "int8": cell("int8", quantized)}, args.repeats)
    a, b = scores["float32"], scores["int8"]
    base = statistics.median(times["float32"])
    return {
        "candidates": args.candidates, "codes_per_candidate": args.clvp_codes,
        "cells": {name: {**_summary(t), "time_vs_float32": statistics.median(t) / base} for name, t in times.items()},
        "spearman": spearman(a.tolist(), b.tolist()),
        "top1_same": int(a.argmax()) == int(b.argmax()),
        "max_abs_score_change": float((a - b).abs().max()),
        "score_std": float(a.std()),
    }


def speed(args: argparse.Namespace) -> dict[str, Any]:
    result = result_header("best_of_n_speed", args, __doc__.split("\n\n")[2], skip_args=("out", "func"))
    torch.manual_seed(args.seed)
    plain = AutoregressiveModel(AutoregressiveConfig.RELEASED).eval()
    packed = copy.deepcopy(plain)
    pack_linears(packed)
    result["pruning"] = speed_pruning(packed, args)
    write_json_atomic(args.out, result)
    p = result["pruning"]
    print(format_table(["pruning", "median s", "batch-steps", "time vs unpruned"],
                       [[n, c["median_s"], c["batch_steps"], c["time_vs_unpruned"]] for n, c in p["cells"].items()]))
    print(f"kept {p['kept_rows']}, identical to the unpruned run: {p['kept_rows_identical']}")
    result["int8_decoder"] = speed_int8_decoder(plain, packed, args)
    del plain, packed
    write_json_atomic(args.out, result)
    d = result["int8_decoder"]
    print(format_table(["decoder (16 rows)", "median s", "ms/token", "time vs float32"],
                       [[n, c["median_s"], c["per_token_ms"], c["time_vs_float32"]] for n, c in d["cells"].items()]))
    print(f"top-1 agreement {d['teacher_forced_top1_agreement']:.3f}, identical sampled candidates "
          f"{d['sampled_identical_candidates']}/16 (first difference at token {d['sampled_mean_first_difference']:.1f})")
    result["int8_clvp"] = speed_int8_clvp(args)
    c = result["int8_clvp"]
    print(format_table(["CLVP", "median s", "time vs float32"],
                       [[n, x["median_s"], x["time_vs_float32"]] for n, x in c["cells"].items()]))
    print(f"Spearman {c['spearman']:.3f}, top-1 same {c['top1_same']}")
    result["system"]["loadavg_1m_at_end"] = load_average()
    return result


# quality (a trained model) ----------------------------------------------------------------------------------------
def _sentences(work_dir: Path, count: int, min_reference_s: float = 0.0,
               excluded: tuple[str, ...] = ()) -> list[tuple[Any, Path]]:
    """Held-out (valid) sentences, one per text, leaving out those the train splits of the `excluded` work folders
    hold, each with its voice's first training clip of at least `min_reference_s` as the reference (a run records
    both, so `rescore` finds the same references)."""
    from intelligibility import trained_texts

    from tortoise_clvp.train.config import TRAIN_SPLIT, VALID_SPLIT
    from tortoise_clvp.train.metadata import corpus_dir, read_metadata

    utterances = read_metadata(work_dir)
    folder = corpus_dir(work_dir)
    reference = {}
    for utterance in utterances:
        if utterance.split == TRAIN_SPLIT and utterance.duration >= min_reference_s:
            reference.setdefault(utterance.voice, folder / utterance.wav_22k)
    chosen, seen = [], trained_texts([Path(path) for path in excluded])
    for utterance in utterances:
        if utterance.split == VALID_SPLIT and utterance.text not in seen and utterance.voice in reference:
            seen.add(utterance.text)
            chosen.append((utterance, reference[utterance.voice]))
    return chosen[:count]


class _RowKeyedSampler:
    """`TextToSpeech`'s sampler: `sample_pruned` without pruning (row-keyed draws), keeping its last output."""

    last = None

    def __call__(self, model, cond_latent, text_ids, options, generator=None, on_batch=None, on_step=None):
        self.last = sample_pruned(model, cond_latent, text_ids, options, None, generator)
        return self.last.codes


def _batch_steps(lengths: list[int], budget: int, batch: int, checkpoint: int | None, kept: list[int]) -> int:
    """Decode steps `sample_pruned` runs for candidates of these lengths (tokens before the stop; the stop itself is
    one more token), pruned at `checkpoint` to the candidates `kept` (None: unpruned)."""
    ends = [min(length + 1, budget) for length in lengths]  # tokens sampled per candidate
    limit = budget if checkpoint is None else checkpoint
    steps = 0
    for start in range(0, len(ends), batch):
        steps += min(max(ends[start : start + batch]), limit) - 1
    if checkpoint is not None:
        live = [i for i in kept if ends[i] > checkpoint]
        for start in range(0, len(live), batch):
            steps += max(ends[i] for i in live[start : start + batch]) - checkpoint
    return steps


def _pruned_pick(scores: list[float], checkpoint_scores: list[float], keep: int) -> tuple[int, list[int]]:
    kept = sorted(sorted(range(len(scores)), key=lambda i: (-checkpoint_scores[i], i))[:keep])
    return max(kept, key=lambda i: (scores[i], -i)), kept


def _models_digest(models_dir: Path) -> str:
    """A digest of a model folder's files (config and weights): a resumed run must score the same model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in models_dir.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _run_identity(run_args: dict[str, Any], digest: str) -> str:
    """What makes two quality runs the same run: the arguments as written to JSON (threads and shard aside: they
    change who does the work, not the work) and the model files."""
    kept = {k: v for k, v in run_args.items() if k not in ("threads", "shard", "shard_index", "shard_count")}
    return json.dumps([kept, digest], default=str, sort_keys=True)


def _resumed_items(out: Path, run_args: dict[str, Any], digest: str) -> list[dict]:
    """The items of an earlier run of the same arguments on the same model files, else none."""
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError):
        return []
    if earlier.get("benchmark") != "best_of_n_quality" \
            or _run_identity(earlier.get("args") or {}, earlier.get("models_digest")) != _run_identity(run_args, digest):
        return []
    return list(earlier.get("items") or [])


def _prune_settings(run_args: dict[str, Any]) -> list[tuple]:
    return [(c, k, s) for c in run_args["prune_checkpoints"] for k in run_args["prune_keeps"] for s in PRUNE_SCORES]


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from tortoise_clvp.api import TextToSpeech
    from tortoise_clvp.eval.asr import Transcriber
    from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
    from tortoise_clvp.presets import PRESETS

    work_dir = args.work_dir.expanduser().resolve()
    models_dir = (args.models_dir or work_dir / "export").expanduser().resolve()
    transcriber = Transcriber(threads=args.threads)
    sampler = _RowKeyedSampler()
    tts = TextToSpeech.from_local(models_dir)
    tts.sampler = sampler
    has_diffusion = tts.models.diffusion is not None and tts.models.vocoder is not None
    audio = args.audio if args.audio != "auto" else ("diffusion" if has_diffusion else "preview")
    if audio == "diffusion" and not has_diffusion:
        raise SystemExit(f"{models_dir} has no diffusion decoder and vocoder; use --audio preview")
    dvae = mel_norms = None
    if audio == "preview":
        from tortoise_clvp.frontend.mel import load_mel_norms
        from tortoise_clvp.train.preview import codes_to_audio
        from tortoise_clvp.weights.native import build_part, read_meta, read_part

        meta = read_meta(models_dir)
        dvae = build_part(meta, "dvae", read_part(models_dir, "dvae"), str(models_dir))
        mel_norms = load_mel_norms(models_dir / "mel_norms.pth")
    quantized = TextToSpeech.from_local(models_dir, quantize="int8") if args.int8 else None
    if quantized is not None:
        quantized.sampler = _RowKeyedSampler()

    grid = sorted(set(args.candidate_counts))
    largest = grid[-1]
    stop = tts.models.autoregressive.config.tokens.mel_stop
    chosen = args.preset or tts.default_preset
    options = replace(PRESETS[chosen].decoding, num_candidates=largest, batch_size=min(largest, args.batch_size),
                      max_new_tokens=args.max_new_tokens)
    diffusion = PRESETS[chosen].diffusion
    excluded = tuple(map(str, args.exclude_trained_on))
    sentences = _sentences(work_dir, args.sentences, args.min_reference_seconds, excluded)
    result = result_header("best_of_n_quality", args, __doc__.split("\n\n")[3], skip_args=("out", "func"))
    digest = _models_digest(models_dir)
    result.update({"models_dir": str(models_dir), "models_digest": digest, "audio": audio, "preset": chosen,
                   "sentences": len(sentences)})
    settings = _prune_settings(vars(args))
    items = _resumed_items(args.out, result["args"], digest)
    done = {(item["id"], item["seed"]) for item in items}
    if items:
        print(f"  resuming: {len(items)} (sentence, seed) items already in {args.out}", flush=True)
    started = time.perf_counter()

    def audio_of(result_, conditioning) -> tuple[list[Tensor], int]:
        if audio == "diffusion":
            return candidate_audio(tts, conditioning, result_, diffusion), OUTPUT_SAMPLE_RATE
        lengths = result_.lengths.tolist()
        return [codes_to_audio(dvae, result_.raw_codes[i, : max(n, 1)], mel_norms) for i, n in enumerate(lengths)], \
            CONDITIONING_SAMPLE_RATE

    for number, (utterance, clip) in enumerate(sentences):
        seeds = [seed for seed in args.seed_list if (utterance.id, seed) not in done]
        if not seeds or number % args.shard_count != args.shard_index:
            continue
        conditioning = tts.get_conditioning([clip])
        for seed in seeds:
            k = largest if audio == "diffusion" else 1
            candidates = tts.candidates(utterance.text, conditioning, options, k=k, seed=seed)
            run = sampler.last
            start = time.perf_counter()
            waves, rate = audio_of(candidates, conditioning)
            heard = hear(utterance.text, candidates.ranked.scores, waves, rate, transcriber, time.perf_counter() - start)
            scores = candidates.ranked.scores.tolist()
            lengths = candidates.lengths.tolist()
            item = {"id": utterance.id, "voice": utterance.voice, "text": utterance.text, "seed": seed,
                    "scores": scores, "lengths": lengths, "wer": list(heard.errors.wer), "cer": list(heard.errors.cer),
                    "transcripts": list(heard.transcripts), "sampling_s": candidates.timings["sampling"],
                    "audio_s": heard.audio_s, "asr_s": heard.asr_s, "prune": {}}
            # pruning, replayed from this unpruned run
            unpruned_pick = clvp_pick(scores, largest)
            for checkpoint in args.prune_checkpoints:
                logprob = mean_logprob(run.logprobs, run.codes, stop, checkpoint).tolist()
                prefix = fix_speech_decoder_output(run.codes[:, :checkpoint], tts.models.autoregressive.config.tokens)
                clvp_prefix = score_candidates(tts.models.clvp, candidates.text_ids, prefix.cpu()).tolist()
                for keep in args.prune_keeps:
                    for score in PRUNE_SCORES:
                        at = logprob if score == "logprob" else clvp_prefix
                        pick, kept = _pruned_pick(scores, at, PruneOptions(at_tokens=checkpoint, keep=keep).kept(largest))
                        item["prune"][f"{checkpoint}/{keep}/{score}"] = {
                            "pick": pick, "agrees": pick == unpruned_pick, "wer": heard.errors.wer[pick],
                            "cer": heard.errors.cer[pick],
                            "batch_steps": _batch_steps(lengths, options.max_new_tokens, options.batch_size,
                                                        checkpoint, kept),
                        }
            item["unpruned_batch_steps"] = run.steps
            # one real pruned run (the first setting): the replay's check, and its time
            checkpoint, keep, score = settings[0]
            generator = torch.Generator(tts.device).manual_seed(seed)
            seconds, real = timed(lambda: sample_pruned(
                tts.models.autoregressive, conditioning.autoregressive, candidates.text_ids, options,
                PruneOptions(at_tokens=checkpoint, keep=keep, score=score), generator, tts.models.clvp))
            replay = item["prune"][f"{checkpoint}/{keep}/{score}"]
            item["real_pruned"] = {"setting": f"{checkpoint}/{keep}/{score}", "seconds": seconds,
                                   "batch_steps": real.steps, "replayed_batch_steps": replay["batch_steps"],
                                   "kept_rows_identical": sum(torch.equal(a, b) for a, b in
                                                              zip(real.codes, run.codes[real.kept])),
                                   "kept": real.kept.tolist()}
            if quantized is not None:
                q = quantized.candidates(utterance.text, conditioning, options, k=k, seed=seed)
                start = time.perf_counter()
                q_waves, q_rate = audio_of(q, conditioning)
                q_heard = hear(utterance.text, q.ranked.scores, q_waves, q_rate, transcriber,
                               time.perf_counter() - start)
                q_pick = clvp_pick(q.ranked.scores.tolist(), largest)
                item["int8"] = {"wer": list(q_heard.errors.wer), "scores": q.ranked.scores.tolist(),
                                "sampling_s": q.timings["sampling"], "pick": q_pick,
                                "same_pick_codes": torch.equal(q.raw_codes[q_pick], candidates.raw_codes[unpruned_pick])}
            if has_diffusion and audio == "diffusion":
                best = clvp_pick(scores, min(PRESET_N, largest))
                latent = candidates.latents[candidates.best.tolist().index(best)]
                item["presets"] = {}
                for name in PRESET_SAMPLERS:
                    timings: dict[str, float] = {}
                    wave = tts.waveforms([latent], conditioning, PRESETS[name].diffusion, seed, timings=timings)[0]
                    one = hear(utterance.text, torch.zeros(1), [wave], OUTPUT_SAMPLE_RATE, transcriber)
                    item["presets"][name] = {"wer": one.errors.wer[0], "cer": one.errors.cer[0], **timings}
            items.append(item)
        print(f"  {number + 1}/{len(sentences)} {utterance.text!r}: CLVP's pick heard as "
              f"{items[-1]['transcripts'][unpruned_pick]!r}", flush=True)
        result["items"] = items
        result["elapsed_s"] = time.perf_counter() - started  # this run's share (a resumed run's earlier time is not in it)
        write_json_atomic(args.out, result)
    if not items:
        raise SystemExit(f"shard {args.shard} of {len(sentences)} sentences has none to run")
    result.update(summarize(items, grid, settings, largest))
    result["system"]["loadavg_1m_at_end"] = load_average()
    return result


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """The shards of one quality run joined: each (sentence, seed) item once, the tables made again."""
    runs = [_load_run(path) for path in args.quality_jsons]
    identity = _run_identity(runs[0]["args"], runs[0]["models_digest"])
    items: dict[tuple, dict] = {}
    for path, run in zip(args.quality_jsons, runs):
        if _run_identity(run["args"], run["models_digest"]) != identity:
            raise SystemExit(f"{path} is not a shard of the same run as {args.quality_jsons[0]}: its arguments or "
                             "model files differ")
        for item in run["items"]:
            key = (item["id"], item["seed"])
            if key in items and items[key]["scores"] != item["scores"]:
                raise SystemExit(f"{path} scores {item['text']!r} (seed {item['seed']}) unlike an earlier file: "
                                 "they were not made by the same code")
            items.setdefault(key, item)
    result = {k: v for k, v in runs[0].items() if k in ("benchmark", "started", "args", "method", "system",
                                                        "models_dir", "models_digest", "audio", "preset", "sentences")}
    result.update({"merged_from": [str(p) for p in args.quality_jsons], "items": list(items.values()),
                   "elapsed_s": sum(run.get("elapsed_s", 0.0) for run in runs)})
    grid = runs[0]["args"]["candidate_counts"]
    result.update(summarize(result["items"], grid, _prune_settings(runs[0]["args"]), grid[-1]))
    return result


def summarize(items: list[dict], grid: list[int], settings: list[tuple], largest: int) -> dict[str, Any]:
    """The tables: best of N, Spearman per text, pruning settings, int8 and presets."""
    groups: dict[str, list[int]] = {}  # item numbers per text: a text's seeds are not independent of each other
    for number, item in enumerate(items):
        groups.setdefault(item["text"], []).append(number)
    sets = [CandidateErrors(tuple(i["scores"]), tuple(i["wer"]), tuple(i["cer"])) for i in items]
    by_text = [[sets[n] for n in group] for group in groups.values()]
    rhos = [r for r in (text_correlation(s) for s in by_text) if r is not None]
    picks = [clvp_pick(i["scores"], largest) for i in items]
    unpruned_wer = sum(i["wer"][pick] for i, pick in zip(items, picks)) / len(items)
    unpruned_steps = sum(i["unpruned_batch_steps"] for i in items)
    pruning = []
    for checkpoint, keep, score in settings:
        key = f"{checkpoint}/{keep}/{score}"
        rows = [i["prune"][key] for i in items]
        # pruned - unpruned pick, seeds averaged per text, with its 95 % interval over texts
        change = {metric: mean_interval([statistics.fmean(rows[n][metric] - items[n][metric][picks[n]] for n in group)
                                         for group in groups.values()]) for metric in ("wer", "cer")}
        pruning.append({"checkpoint": checkpoint, "keep": keep, "score": score,
                        "wer": sum(r["wer"] for r in rows) / len(rows), "unpruned_wer": unpruned_wer,
                        "cer": sum(r["cer"] for r in rows) / len(rows),
                        **{f"{metric}_change": list(interval) for metric, interval in change.items()},
                        "agreement": sum(r["agrees"] for r in rows) / len(rows),
                        "batch_steps_saved": 1 - sum(r["batch_steps"] for r in rows) / unpruned_steps})
    real = [i["real_pruned"] for i in items]
    summary: dict[str, Any] = {
        "best_of_n": best_of_n_rows(sets, grid),
        "clvp_gain": [{**asdict(gain), "relative": gain.relative} for gain in
                      (pick_gain(by_text, n, metric) for metric in ("wer", "cer") for n in grid)],
        "spearman": {"texts": len(rhos), "mean": sum(rhos) / len(rhos) if rhos else None,
                     "negative_fraction": sum(r < 0 for r in rhos) / len(rhos) if rhos else None},
        "pruning": pruning,
        "real_pruned": {"setting": real[0]["setting"],
                        "replay_matches": sum(r["batch_steps"] == r["replayed_batch_steps"] for r in real) / len(real),
                        "seconds": sum(r["seconds"] for r in real),
                        "unpruned_sampling_s": sum(i["sampling_s"] for i in items)},
    }
    if "int8" in items[0]:
        summary["int8"] = {"wer_clvp_pick": sum(i["int8"]["wer"][i["int8"]["pick"]] for i in items) / len(items),
                           "float32_wer_clvp_pick": unpruned_wer,
                           "same_pick": sum(i["int8"]["same_pick_codes"] for i in items) / len(items),
                           "sampling_s": sum(i["int8"]["sampling_s"] for i in items),
                           "float32_sampling_s": sum(i["sampling_s"] for i in items)}
    if "presets" in items[0]:
        summary["presets"] = {name: {"wer": sum(i["presets"][name]["wer"] for i in items) / len(items),
                                     "cer": sum(i["presets"][name]["cer"] for i in items) / len(items),
                                     "diffusion_s": sum(i["presets"][name]["diffusion"] for i in items),
                                     # per item: a stall of the machine (a paused or starved process) moves a sum
                                     "diffusion_s_median": statistics.median(i["presets"][name]["diffusion"]
                                                                             for i in items)}
                              for name in PRESET_SAMPLERS}
    return summary


def _load_run(path: Path) -> dict[str, Any]:
    run = json.loads(path.read_text(encoding="utf-8"))
    if run.get("benchmark") != "best_of_n_quality" or not run.get("items"):
        raise SystemExit(f"{path} is not a best_of_n quality result with items")
    return run


class _Replay:
    """A quality run's candidates sampled again: the same model (its files at `models_dir`, default the run's),
    options, references and seeds. `candidates(item)` checks that CLVP scores them as the run did (in the model's
    own layout), which proves they are the run's candidates."""

    def __init__(self, run: dict[str, Any], models_dir: Path | None):
        from tortoise_clvp.api import TextToSpeech
        from tortoise_clvp.presets import PRESETS

        self.models_dir = Path(models_dir or run["models_dir"])
        self.tts = TextToSpeech.from_local(self.models_dir)
        self.tts.sampler = _RowKeyedSampler()
        self.grid = run["args"]["candidate_counts"]
        self.options = replace(PRESETS[run["preset"]].decoding, num_candidates=self.grid[-1],
                               batch_size=min(self.grid[-1], run["args"]["batch_size"]),
                               max_new_tokens=run["args"]["max_new_tokens"])
        sentences = _sentences(Path(run["args"]["work_dir"]), run["args"]["sentences"],
                               run["args"].get("min_reference_seconds", 0.0),
                               tuple(run["args"].get("exclude_trained_on", ())))
        self.references = {utterance.id: clip for utterance, clip in sentences}
        self.largest_difference = 0.0

    def candidates(self, item: dict[str, Any], k: int = 1):
        conditioning = self.tts.get_conditioning([self.references[item["id"]]])
        result = self.tts.candidates(item["text"], conditioning, self.options, k=k, seed=item["seed"])
        difference = float((result.ranked.scores - torch.tensor(item["scores"])).abs().max())
        self.largest_difference = max(self.largest_difference, difference)
        if difference > 1e-3:
            raise SystemExit(f"the resampled candidates of {item['text']!r} are not the run's (scores differ by up to "
                             f"{difference:.4g}): was the model or the code changed since?")
        return conditioning, result


def rescore(args: argparse.Namespace) -> dict[str, Any]:
    from tortoise_clvp.api import TextToSpeech

    run = _load_run(args.quality_json)
    done = run["items"]
    replay = _Replay(run, args.models_dir)
    clvp, tokens = replay.tts.models.clvp, replay.tts.models.autoregressive.config.tokens
    if args.clvp is not None:  # another scorer for the same candidates (the run's own still proves they are the same)
        clvp = TextToSpeech.from_local(args.clvp).models.clvp
    result = result_header("best_of_n_rescore", args, __doc__.split("\n\n")[4], skip_args=("out", "func"))
    result.update({"quality_run": str(args.quality_json), "models_dir": str(replay.models_dir),
                   "scorer": str(args.clvp or replay.models_dir), "items": len(done)})
    scored: dict[str, list[CandidateErrors]] = {str(p): [] for p in args.padding_list}
    seconds = {str(p): 0.0 for p in args.padding_list}
    texts: list[str] = []
    for number, item in enumerate(done):
        _, candidates = replay.candidates(item)
        for padding in args.padding_list:
            cut = fix_speech_decoder_output(scoring_span(candidates.raw_codes, tokens, padding), tokens)
            took, scores = timed(lambda cut=cut: score_candidates(clvp, candidates.text_ids, cut))
            seconds[str(padding)] += took
            scored[str(padding)].append(CandidateErrors(tuple(scores.tolist()), tuple(item["wer"]), tuple(item["cer"])))
        texts.append(item["text"])
        print(f"  {number + 1}/{len(done)} {item['text']!r}", flush=True)
    result["max_score_difference_from_run"] = replay.largest_difference
    result["layouts"] = []
    for padding in args.padding_list:
        sets = scored[str(padding)]
        by_text: dict[str, list[CandidateErrors]] = {}
        for text, one in zip(texts, sets):
            by_text.setdefault(text, []).append(one)
        rhos = [r for r in (text_correlation(group) for group in by_text.values()) if r is not None]
        result["layouts"].append({"score_padding": padding, "best_of_n": best_of_n_rows(sets, replay.grid),
                                  "spearman_mean": sum(rhos) / len(rhos) if rhos else None,
                                  "scoring_s": seconds[str(padding)]})
    result["system"]["loadavg_1m_at_end"] = load_average()
    return result


def noise(args: argparse.Namespace) -> dict[str, Any]:
    from tortoise_clvp.eval.asr import Transcriber
    from tortoise_clvp.frontend.mel import OUTPUT_SAMPLE_RATE
    from tortoise_clvp.presets import PRESETS

    run = _load_run(args.quality_json)
    if run.get("audio") != "diffusion":
        raise SystemExit(f"{args.quality_json} made its audio with the {run.get('audio')} path; the noise split needs "
                         "a run whose audio came from the diffusion decoder")
    replay = _Replay(run, args.models_dir)
    if args.candidates > replay.grid[-1]:
        raise SystemExit(f"the run sampled {replay.grid[-1]} candidates per item; --candidates {args.candidates} "
                         "asks for more")
    transcriber = Transcriber(threads=args.threads)
    diffusion = PRESETS[run["preset"]].diffusion
    result = result_header("best_of_n_noise", args, __doc__.split("\n\n")[5], skip_args=("out", "func"))
    result.update({"quality_run": str(args.quality_json), "models_dir": str(replay.models_dir),
                   "preset": run["preset"], "items": []})
    tables: dict[str, list[list[list[float]]]] = {"wer": [], "cer": []}
    for number, item in enumerate(run["items"][: args.items]):
        conditioning, candidates = replay.candidates(item, k=replay.grid[-1])
        latents = sampling_order_latents(candidates)
        seeds = [item["seed"]] + [item["seed"] + NOISE_SEED_STEP * j for j in range(1, args.noise_seeds)]
        errors = [[utterance_errors(item["text"], transcriber.transcribe(
            replay.tts.waveforms([latents[index]], conditioning, diffusion, seed)[0], OUTPUT_SAMPLE_RATE))
            for seed in seeds] for index in range(args.candidates)]
        wer = [[e[0] for e in row] for row in errors]
        cer = [[e[1] for e in row] for row in errors]
        tables["wer"].append(wer)
        tables["cer"].append(cer)
        reproduced = sum(w[0] == item["wer"][i] and c[0] == item["cer"][i] for i, (w, c) in enumerate(zip(wer, cer)))
        result["items"].append({"id": item["id"], "text": item["text"], "seed": item["seed"], "noise_seeds": seeds,
                                "wer": wer, "cer": cer, "run_errors_reproduced": reproduced})
        print(f"  {number + 1}/{min(args.items, len(run['items']))} {item['text']!r}: the run's errors reproduced for "
              f"{reproduced} of {args.candidates}", flush=True)
    result["max_score_difference_from_run"] = replay.largest_difference
    result["run_errors_reproduced"] = sum(i["run_errors_reproduced"] for i in result["items"])
    result["split"] = {metric: asdict(noise_split(t)) for metric, t in tables.items()}
    result["system"]["loadavg_1m_at_end"] = load_average()
    return result


def print_rescore(result: dict[str, Any]) -> None:
    largest = result["layouts"][0]["best_of_n"][-1]["n"]
    rows = []
    for layout in result["layouts"]:
        top = layout["best_of_n"][-1]
        rows.append([str(layout["score_padding"]), top["wer_clvp"], top["cer_clvp"], top["wer_random"],
                     top["cer_random"], top["wer_oracle"], layout["spearman_mean"], layout["scoring_s"]])
    print(format_table(["score_padding", f"WER clvp@{largest}", "CER clvp", "WER random", "CER random", "WER oracle",
                        "Spearman", "scoring s"], rows, digits=3))


def print_noise(result: dict[str, Any]) -> None:
    split = result["split"]
    print(format_table(["metric", "code share", "code variance", "noise variance", "random", "code ranker", "oracle"],
                       [[m, s["code_share"], s["code_variance"], s["noise_variance"], s["random"], s["code_ranker"],
                         s["oracle"]] for m, s in split.items()], digits=4))
    first = next(iter(split.values()))
    print(f"{first['sets']} sets x {first['candidates']} candidates x {first['seeds']} noise seeds; the run's own "
          f"errors reproduced for {result['run_errors_reproduced']} of {first['sets'] * first['candidates']} candidates")


def plot_quality(result: dict[str, Any], out: Path) -> None:
    """WER against N beside the JSON (OUT with .png), when matplotlib (the bench extra) is installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'tortoise-clvp[bench]')")
        return
    from tortoise_clvp.atomic import atomic_write
    from tortoise_clvp.bench.rerank_report import best_of_n_figure

    items = len(result["items"])
    figure = best_of_n_figure(result["best_of_n"], Figure, f"Best of N by ear ({items} sentence x seed items)")
    with atomic_write(out.with_suffix(".png")) as stream:
        figure.savefig(stream, format="png", dpi=110)
    print(f"wrote {out.with_suffix('.png')}")


def print_quality(result: dict[str, Any]) -> None:
    print(format_table(["N", "WER clvp", "WER random", "WER oracle", "CER clvp", "CER random", "CER oracle"],
                       [[r["n"], r["wer_clvp"], r["wer_random"], r["wer_oracle"], r["cer_clvp"], r["cer_random"],
                         r["cer_oracle"]] for r in result["best_of_n"]], digits=3))
    print(format_table(["N", "metric", "CLVP - random", "95 % interval", "relative"],
                       [[g["n"], g["metric"], g["difference"], f"{g['low']:+.3f} .. {g['high']:+.3f}", g["relative"]]
                        for g in result["clvp_gain"]], digits=3))
    s = result["spearman"]
    print(f"Spearman(CLVP score, WER) per text: mean {s['mean']}, negative in {s['negative_fraction']} of {s['texts']}")
    print(format_table(["checkpoint", "keep", "score", "WER", "unpruned WER", "WER change (95 %)", "CER change (95 %)",
                        "agreement", "steps saved"],
                       [[p["checkpoint"], p["keep"], p["score"], p["wer"], p["unpruned_wer"],
                         *(f"{m:+.3f} ({lo:+.3f} .. {hi:+.3f})" for m, lo, hi in (p["wer_change"], p["cer_change"])),
                         p["agreement"], p["batch_steps_saved"]] for p in result["pruning"]], digits=3))
    for key in ("real_pruned", "int8", "presets"):
        if key in result:
            print(f"{key}: {result[key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("speed", help="full-size random weights: pruning and int8 speed, int8 agreement")
    s.add_argument("--candidates", type=int, default=32)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--tokens", type=int, default=96, help="forced length of every candidate")
    s.add_argument("--checkpoint", type=int, default=24)
    s.add_argument("--keep", type=float, default=0.25)
    s.add_argument("--int8-tokens", type=int, default=24, help="forced tokens of the int8 decoder timing")
    s.add_argument("--clvp-codes", type=int, default=250, help="codes per candidate in the CLVP timing")
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--out", type=Path, default=RESULTS / "best_of_n_speed.json")
    q = commands.add_parser("quality", help="a trained model: best of N by ear, pruning replayed, int8, presets")
    q.add_argument("work_dir", type=Path, help="training work folder (its corpus gives the held-out sentences)")
    q.add_argument("--models-dir", type=Path, default=None, help="default WORK_DIR/export")
    q.add_argument("--sentences", type=int, default=100)
    q.add_argument("--exclude-trained-on", type=Path, nargs="*", default=[], metavar="WORK_DIR",
                   help="leave out sentences these work folders trained on (a model fine-tuned on several corpora)")
    q.add_argument("--min-reference-seconds", type=float, default=2.0, help="shortest reference clip taken")
    q.add_argument("--seeds", default="0,1")
    q.add_argument("--candidates", default="1,2,4,8,16,32")
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--max-new-tokens", type=int, default=300)
    q.add_argument("--audio", choices=("auto", "diffusion", "preview"), default="auto")
    q.add_argument("--preset", default=None,
                   help="its decoder sampling and diffusion sampler make the audio (default: the model's own preset)")
    q.add_argument("--prune-at", default="16,32,64", help="checkpoints (tokens)")
    q.add_argument("--prune-keep", default="0.25,0.5", help="fractions kept")
    q.add_argument("--int8", action="store_true", help="also run with the decoder and CLVP int8-quantized")
    q.add_argument("--shard", default="0/1", help="K/M: run every M-th sentence from the K-th (0-based)")
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--out", type=Path, default=RESULTS / "best_of_n_quality.json")
    m = commands.add_parser("merge", help="the shards of one quality run joined into one")
    m.add_argument("quality_jsons", type=Path, nargs="+", metavar="QUALITY_JSON")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--out", type=Path, required=True)
    r = commands.add_parser("rescore", help="a quality run's candidates scored with other CLVP layouts (no audio)")
    r.add_argument("quality_json", type=Path)
    r.add_argument("--models-dir", type=Path, default=None,
                   help="the run's model files at another path (default: the run's models_dir)")
    r.add_argument("--clvp", type=Path, default=None, help="a model folder whose CLVP scores instead of the run's own")
    r.add_argument("--paddings", default="none,0,8,32,64", help="score_padding values; none: every sampled position")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", type=Path, default=RESULTS / "best_of_n_rescore.json")
    n = commands.add_parser("noise", help="a quality run's candidates diffused with more noise seeds: codes vs noise")
    n.add_argument("quality_json", type=Path)
    n.add_argument("--models-dir", type=Path, default=None,
                   help="the run's model files at another path (default: the run's models_dir)")
    n.add_argument("--items", type=int, default=12, help="the run's first ITEMS (sentence, seed) items")
    n.add_argument("--candidates", type=int, default=8, help="the first CANDIDATES of each item")
    n.add_argument("--noise-seeds", type=int, default=4, help="diffusion seeds per candidate, the run's own included")
    n.add_argument("--threads", type=int, default=2)
    n.add_argument("--out", type=Path, default=RESULTS / "best_of_n_noise.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "noise":
        if args.items < 1 or args.candidates < 2 or args.noise_seeds < 2:
            parser.error("noise needs --items >= 1, --candidates >= 2 and --noise-seeds >= 2")
        result = noise(args)
        print_noise(result)
        finish(args.out, result)
        return
    if args.command == "rescore":
        args.padding_list = [None if p.strip() == "none" else int(p) for p in args.paddings.split(",") if p.strip()]
        result = rescore(args)
        print_rescore(result)
        finish(args.out, result)
        return
    if args.command == "speed":
        finish(args.out, speed(args))
        return
    if args.command == "merge":
        result = merge(args)
        print_quality(result)
        finish(args.out, result)
        plot_quality(result, args.out)
        return
    try:
        args.shard_index, args.shard_count = (int(part) for part in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard {args.shard!r}: give K/M, e.g. 0/2 and 1/2 for two processes")
    if not 0 <= args.shard_index < args.shard_count:
        parser.error(f"--shard {args.shard}: K must be at least 0 and below M")
    args.seed_list, args.candidate_counts = _ints(args.seeds), _ints(args.candidates)
    args.prune_checkpoints, args.prune_keeps = _ints(args.prune_at), _floats(args.prune_keep)
    result = quality(args)
    print_quality(result)
    finish(args.out, result)
    plot_quality(result, args.out)


if __name__ == "__main__":
    main()
