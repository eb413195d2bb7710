"""The training corpus: its size, how fast the corpus and tokenizer stages run, and how intelligible each voice is.

Three measurements:
1. Size of a built corpus (--work-dir, default /work/train_run, made by `clvp-tts train corpus`): hours, utterances,
   distinct sentences and words per split, hours per voice.
2. Speed: the corpus stage renders a sample of the full recipe (every voice, --sample-sentences training sentences
   plus proportional held-out ones) into a temporary folder with the full recipe's worker count, timed end to end;
   utterances and audio seconds per wall second, and the full corpus's wall time extrapolated from them. The
   tokenizer stage (BPE + mel norms over up to 2,000 training clips) is timed on the built corpus, in a temporary
   work folder that links to it.
3. Intelligibility: Whisper tiny.en (the `eval` extra) transcribes --per-voice utterances of every voice, drawn at
   random (seeded) from the built corpus; WER and CER after the shared normaliser (tortoise_clvp.eval.asr: numbers
   and abbreviations spelled out as our cleaners spell them, punctuation dropped).
The machine is shared: the 1-minute load average is recorded at start and end.

Usage: python benchmarks/corpus.py [--work-dir /work/train_run] [--per-voice 20] [--sample-sentences 150]
       [--threads 2] [--seed 0] [--out benchmarks/results/corpus.json]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere

from common import finish, format_table, load_average, result_header  # noqa: E402

from tortoise_clvp.frontend.audio import load_audio  # noqa: E402
from tortoise_clvp.frontend.text import english_cleaners  # noqa: E402
from tortoise_clvp.train.config import CORPUS_DIR, RecipeConfig  # noqa: E402
from tortoise_clvp.train.corpus import plan_corpus, run_corpus  # noqa: E402
from tortoise_clvp.train.metadata import read_metadata  # noqa: E402
from tortoise_clvp.train.tokenizer import run_tokenizer  # noqa: E402


def corpus_size(work_dir: Path) -> dict:
    """Hours, utterances, distinct sentences and words, per split and per voice."""
    utterances = read_metadata(work_dir)
    splits = {}
    for split in sorted({u.split for u in utterances}):
        chosen = [u for u in utterances if u.split == split]
        words = Counter(w for text in {u.text for u in chosen} for w in english_cleaners(text).split())
        splits[split] = {
            "utterances": len(chosen),
            "hours": sum(u.duration for u in chosen) / 3600,
            "sentences": len({u.text for u in chosen}),
            "distinct_words": len(words),
        }
    voices = defaultdict(float)
    for u in utterances:
        voices[u.voice] += u.duration / 3600
    all_words = {w for u in utterances for w in english_cleaners(u.text).split()}
    return {
        "utterances": len(utterances),
        "hours": sum(u.duration for u in utterances) / 3600,
        "distinct_words": len(all_words),
        "splits": splits,
        "hours_per_voice": dict(sorted(voices.items())),
    }


def time_corpus_stage(sample_sentences: int, seed: int) -> dict:
    """Render a sample of the full recipe (all voices, full worker count) and extrapolate to the full corpus."""
    full = RecipeConfig()
    scale = sample_sentences / full.corpus.train_sentences
    sample = replace(full, corpus=replace(
        full.corpus,
        train_sentences=sample_sentences,
        valid_sentences=max(1, round(full.corpus.valid_sentences * scale)),
        unseen_sentences=max(1, round(full.corpus.unseen_sentences * scale)),
    ), seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run_corpus(Path(folder), sample, lambda *args: None)
        seconds = time.perf_counter() - started
        utterances = read_metadata(Path(folder))
    audio = sum(u.duration for u in utterances)
    planned = len(plan_corpus(full.corpus, full.seed))
    per_utterance = seconds / len(utterances)
    return {
        "sample_utterances": len(utterances),
        "sample_audio_s": audio,
        "wall_s": seconds,
        "utterances_per_s": len(utterances) / seconds,
        "audio_s_per_wall_s": audio / seconds,
        "full_planned_utterances": planned,
        "full_wall_s_extrapolated": planned * per_utterance,
        "workers": full.corpus.workers,
    }


def time_tokenizer_stage(work_dir: Path) -> dict:
    """The tokenizer stage on the built corpus, writing into a temporary work folder."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / CORPUS_DIR).symlink_to((work_dir / CORPUS_DIR).resolve())
        started = time.perf_counter()
        run_tokenizer(Path(folder), RecipeConfig(), lambda *args: None)
        seconds = time.perf_counter() - started
    return {"wall_s": seconds, "mel_norm_clips": RecipeConfig().tokenizer.mel_norm_clips}


def voice_wer(work_dir: Path, per_voice: int, threads: int, seed: int) -> dict:
    """WER/CER of Whisper tiny.en on `per_voice` random utterances of every voice of the built corpus."""
    from tortoise_clvp.eval.asr import Transcriber, error_rates

    transcriber = Transcriber(threads=threads)
    by_voice = defaultdict(list)
    for u in read_metadata(work_dir):
        by_voice[u.voice].append(u)
    rng = random.Random(seed)
    results = {}
    for voice, utterances in sorted(by_voice.items()):
        chosen = rng.sample(utterances, min(per_voice, len(utterances)))
        heard = []
        for u in chosen:
            wav = load_audio(work_dir / CORPUS_DIR / u.wav_22k, 22050)[0]
            heard.append(transcriber.transcribe(wav, 22050))
        rates = error_rates([u.text for u in chosen], heard)
        worst = max(zip(chosen, heard), key=lambda pair: error_rates([pair[0].text], [pair[1]]).wer)
        results[voice] = {"wer": rates.wer, "cer": rates.cer, "sentences": rates.sentences,
                          "worst": {"text": worst[0].text, "heard": worst[1]}}
        print(f"  {voice}: WER {rates.wer:.3f} CER {rates.cer:.3f} ({rates.sentences} sentences)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/work/train_run"))
    parser.add_argument("--per-voice", type=int, default=20)
    parser.add_argument("--sample-sentences", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "corpus.json")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is needed: apt-get install espeak-ng sox")

    result = result_header("corpus", args, __doc__.split("\n\n")[1])
    print("size of", args.work_dir, flush=True)
    result["size"] = size = corpus_size(args.work_dir)
    print(format_table(
        ["split", "utterances", "hours", "sentences", "distinct words"],
        [[name, s["utterances"], s["hours"], s["sentences"], s["distinct_words"]] for name, s in size["splits"].items()]
        + [["all", size["utterances"], size["hours"], None, size["distinct_words"]]],
    ), flush=True)
    print("timing the corpus stage on a sample ...", flush=True)
    result["corpus_stage"] = corpus = time_corpus_stage(args.sample_sentences, args.seed)
    print("timing the tokenizer stage ...", flush=True)
    result["tokenizer_stage"] = tokenizer = time_tokenizer_stage(args.work_dir)
    print(format_table(["stage", "wall s", "utterances/s", "audio s per s", "full corpus, min"], [
        ["corpus (sample)", corpus["wall_s"], corpus["utterances_per_s"], corpus["audio_s_per_wall_s"],
         corpus["full_wall_s_extrapolated"] / 60],
        ["tokenizer (full)", tokenizer["wall_s"], None, None, tokenizer["wall_s"] / 60],
    ]), flush=True)
    print("ASR per voice ...", flush=True)
    result["asr"] = asr = voice_wer(args.work_dir, args.per_voice, args.threads, args.seed)
    print(format_table(["voice", "hours", "WER", "CER", "sentences"], [
        [voice, size["hours_per_voice"].get(voice), r["wer"], r["cer"], r["sentences"]] for voice, r in asr.items()
    ], digits=3))
    result["system"]["loadavg_1m_at_end"] = load_average()
    finish(args.out, result)


if __name__ == "__main__":
    main()
