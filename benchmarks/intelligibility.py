"""Intelligibility, voice match and speed of a model (the bundled one by default), judged by an independent ASR.

Sentences come from a training work folder's corpus, never from training: the valid split (held-out sentences
spoken by the training voices) and the unseen_voice split (held-out sentences spoken by voices training never
heard), the first --sentences and --unseen-sentences of each in metadata order, leaving out any sentence in the
train split of an --exclude-trained-on corpus (a model trained or fine-tuned on another corpus is then judged only
on sentences it never saw either). Each voice is conditioned on
--reference-clips of its other clips (training voices: train-split clips; held-out voices: clips of sentences that
are not evaluated; at least 2 s long), drawn with --seed. Rows:
- corpus audio: the corpus's own 24 kHz clip of each sentence (the ceiling: how well Whisper hears the voices);
- MODEL / PRESET: `generate(text, voice, preset, seed)` for every sentence, for every --presets (and, given
  --candidates, once per candidate count: MODEL / PRESET / N candidates, the preset's other settings kept).
Metrics: WER and CER from Whisper tiny.en (`eval.asr`: corpus-level rates after one normaliser on both sides);
voice identification (`eval.voice_match`: nearest centroid on log-mel and pitch statistics, centroids from
--id-clips reference clips per voice that are neither evaluated nor used for conditioning) as the share of clips
identified as their own voice; the real-time factor (generation seconds over audio seconds, all sentences of the
row); the time to first audio of `stream_speech` on --stream-texts two-sentence texts (median), streamed as the
CLI's --stream and the server stream (first_chunk_length=STREAMING_FIRST_CHUNK: the first sentence alone).

Usage: python benchmarks/intelligibility.py WORK_DIR [--models-dir DIR] [--presets ultra_fast_dpm fast_dpm]
       [--candidates 4 16] [--sentences 200] [--unseen-sentences 60] [--exclude-trained-on OTHER_WORK_DIR ...]
       [--out benchmarks/results/intelligibility.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import finish, format_table, load_average, result_header, write_json_atomic  # noqa: E402

from tortoise_clvp import TextToSpeech  # noqa: E402
from tortoise_clvp.eval.asr import Transcriber, error_rates  # noqa: E402
from tortoise_clvp.eval.voice_match import VoiceMatcher, accuracy_by_voice, clip_features  # noqa: E402
from tortoise_clvp.frontend.audio import load_audio  # noqa: E402
from tortoise_clvp.frontend.mel import OUTPUT_SAMPLE_RATE  # noqa: E402
from tortoise_clvp.longform import STREAMING_FIRST_CHUNK, stream_speech  # noqa: E402
from tortoise_clvp.presets import preset  # noqa: E402
from tortoise_clvp.train.config import TRAIN_SPLIT, UNSEEN_VOICE_SPLIT, VALID_SPLIT  # noqa: E402
from tortoise_clvp.train.metadata import Utterance, corpus_dir, read_metadata  # noqa: E402
from tortoise_clvp.weights.discovery import resolve_models_dir  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "intelligibility.json"
GROUPS = {"training voices": VALID_SPLIT, "held-out voices": UNSEEN_VOICE_SPLIT}
CORPUS_ROW = "corpus audio"
MIN_REFERENCE_SECONDS = 2.0  # shorter clips are not used as references (conditioning needs at least 1 s)


def trained_texts(work_dirs: list[Path]) -> set[str]:
    """Every sentence of the train splits of these work folders' corpora."""
    return {u.text for work_dir in work_dirs for u in read_metadata(work_dir) if u.split == TRAIN_SPLIT}


def pick(utterances: list[Utterance], args: argparse.Namespace, excluded: set[str]) -> dict[str, list[Utterance]]:
    """The evaluated utterances of each group: the first N of its split whose text is not `excluded`, in metadata
    order."""
    counts = {VALID_SPLIT: args.sentences, UNSEEN_VOICE_SPLIT: args.unseen_sentences}
    return {
        group: [u for u in utterances if u.split == split and u.text not in excluded][: counts[split]]
        for group, split in GROUPS.items()
    }


def voice_pools(utterances: list[Utterance], evaluated: set[str], args: argparse.Namespace):
    """Per voice: clips for conditioning and clips for the identifier's centroid, disjoint and never evaluated."""
    generator = torch.Generator().manual_seed(args.seed)
    by_voice: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        unseen = utterance.split == UNSEEN_VOICE_SPLIT
        long_enough = utterance.duration >= MIN_REFERENCE_SECONDS
        if utterance.id not in evaluated and long_enough and (utterance.split == TRAIN_SPLIT or unseen):
            by_voice.setdefault(utterance.voice, []).append(utterance)
    conditioning, identification = {}, {}
    for voice, pool in sorted(by_voice.items()):
        if len(pool) < args.reference_clips + args.id_clips:
            sys.exit(f"voice {voice} has {len(pool)} clips that are not evaluated; --reference-clips plus --id-clips "
                     f"({args.reference_clips + args.id_clips}) must fit: lower them or evaluate fewer sentences")
        order = torch.randperm(len(pool), generator=generator).tolist()
        conditioning[voice] = [pool[i] for i in order[: args.reference_clips]]
        identification[voice] = [pool[i] for i in order[args.reference_clips : args.reference_clips + args.id_clips]]
    return conditioning, identification


def score(texts: list[str], transcripts: list[str], labelled: list[tuple[str, torch.Tensor]],
          matcher: VoiceMatcher) -> dict[str, Any]:
    rates = error_rates(texts, transcripts)
    accuracy = accuracy_by_voice(matcher, labelled)
    return {"wer": rates.wer, "cer": rates.cer, "sentences": rates.sentences, "voice_id": accuracy,
            "voice_id_mean": statistics.mean(accuracy.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a training work folder (its corpus gives sentences and voices)")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: the usual search, ending at the bundled model")
    parser.add_argument("--presets", nargs="+", default=["ultra_fast_dpm", "fast_dpm"])
    parser.add_argument("--candidates", type=int, nargs="*", default=[],
                        help="candidate counts to run each preset with (default: the preset's own)")
    parser.add_argument("--sentences", type=int, default=200, help="held-out sentences of the training voices")
    parser.add_argument("--unseen-sentences", type=int, default=60, help="held-out sentences of held-out voices")
    parser.add_argument("--reference-clips", type=int, default=3, help="clips each voice is conditioned on")
    parser.add_argument("--id-clips", type=int, default=12, help="clips per voice for the voice identifier")
    parser.add_argument("--stream-texts", type=int, default=5)
    parser.add_argument("--exclude-trained-on", type=Path, nargs="*", default=[], metavar="WORK_DIR",
                        help="leave out sentences in the train split of these work folders' corpora")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if any(count < 1 for count in args.candidates):
        sys.exit(f"--candidates must be >= 1, got {args.candidates}")
    work_dir = args.work_dir.expanduser().resolve()
    folder = corpus_dir(work_dir)
    utterances = read_metadata(work_dir)
    excluded = trained_texts([path.expanduser().resolve() for path in args.exclude_trained_on])
    groups = pick(utterances, args, excluded)
    evaluated = {u.id for chosen in groups.values() for u in chosen}
    conditioning, identification = voice_pools(utterances, evaluated, args)
    models = resolve_models_dir(args.models_dir)
    result = result_header("intelligibility", args, __doc__.split("\n\n")[1], skip_args=("out",))
    result.update(work_dir=str(work_dir), models_dir=str(models.path), models_source=models.source, rows={},
                  left_out_as_trained={split: sum(u.split == split and u.text in excluded for u in utterances)
                                       for split in GROUPS.values()})
    print(f"model: {models.path} ({models.source}); sentences: "
          + ", ".join(f"{group} {len(chosen)}" for group, chosen in groups.items()))

    def audio(utterance: Utterance) -> torch.Tensor:
        return load_audio(folder / utterance.wav_24k, OUTPUT_SAMPLE_RATE)[0]

    matcher = VoiceMatcher.from_references(
        {voice: [clip_features(audio(u), OUTPUT_SAMPLE_RATE) for u in clips] for voice, clips in identification.items()}
    )
    asr = Transcriber()
    rows: dict[str, dict[str, Any]] = result["rows"]
    for group, chosen in groups.items():
        clips = [audio(u) for u in chosen]
        transcripts = [asr.transcribe(clip, OUTPUT_SAMPLE_RATE) for clip in clips]
        labelled = [(u.voice, clip_features(clip, OUTPUT_SAMPLE_RATE)) for u, clip in zip(chosen, clips)]
        rows.setdefault(CORPUS_ROW, {})[group] = score([u.text for u in chosen], transcripts, labelled, matcher)
    write_json_atomic(args.out, result)

    tts = TextToSpeech.from_local(models.path)
    voices = {voice: tts.get_conditioning([folder / u.wav_22k for u in clips]) for voice, clips in conditioning.items()}
    runs = [(name, count) for name in args.presets for count in (args.candidates or [None])]
    for name, count in runs:
        options = preset(name)
        if count is not None:
            options = replace(options, decoding=options.decoding.with_candidates(count))
        label = name if count is None else f"{name} / {count} candidates"
        row: dict[str, Any] = {}
        for group, chosen in groups.items():
            transcripts, labelled, seconds, audio_seconds = [], [], 0.0, 0.0
            for number, utterance in enumerate(chosen):
                started = time.perf_counter()
                speech = tts.generate(utterance.text, voices[utterance.voice], options, seed=args.seed + number)
                seconds += time.perf_counter() - started
                wave = speech.waveform.float().reshape(-1)
                audio_seconds += wave.numel() / OUTPUT_SAMPLE_RATE
                transcripts.append(asr.transcribe(wave, OUTPUT_SAMPLE_RATE))
                labelled.append((utterance.voice, clip_features(wave, OUTPUT_SAMPLE_RATE)))
                print(f"  {label} {group} {number + 1}/{len(chosen)}: {utterance.text!r} -> {transcripts[-1]!r}", flush=True)
            row[group] = {**score([u.text for u in chosen], transcripts, labelled, matcher),
                          "real_time_factor": seconds / audio_seconds, "transcripts": transcripts}
        texts = [f"{a.text} {b.text}" for a, b in zip(groups["training voices"][::2], groups["training voices"][1::2])]
        first_audio = []
        for number, text in enumerate(texts[: args.stream_texts]):
            voice = voices[groups["training voices"][2 * number].voice]
            started = time.perf_counter()
            stream = stream_speech(tts, text, voice, options, seed=args.seed, first_chunk_length=STREAMING_FIRST_CHUNK)
            next(iter(stream))
            first_audio.append(time.perf_counter() - started)
            stream.close()
        row["time_to_first_audio_s"] = statistics.median(first_audio) if first_audio else None
        rows[f"model / {label}"] = row
        write_json_atomic(args.out, result)

    table = []
    for label, row in rows.items():
        for group in GROUPS:
            cell = row[group]
            table.append([label, group, cell["wer"], cell["cer"], cell["voice_id_mean"], cell.get("real_time_factor"),
                          row.get("time_to_first_audio_s") if group == "training voices" else None])
    print()
    print(format_table(["audio", "voices", "WER", "CER", "voice id", "RTF", "first audio s"], table, digits=3))
    result["system"]["loadavg_1m_at_end"] = load_average()
    finish(args.out, result)


if __name__ == "__main__":
    main()
