"""What the model stages of the training recipe cost and achieve: the DVAE, the decoder and CLVP of a work folder.

Per stage (read from the stage's own metrics.json): steps run, training wall time, throughput, the best held-out
evaluation and its curve. Codes: held-out reconstruction MSE and codebook perplexity/usage, the calm code.

Intelligibility through the Griffin-Lim preview (`train.preview`), scored by Whisper tiny.en (the `eval` extra) on
`--sentences` held-out (valid) sentences of the training voices, each conditioned on another clip of its voice:
- corpus audio: the rendered clip itself (the ceiling of everything);
- ground-truth codes: the clip's own codes through the DVAE decoder and Griffin-Lim (the preview's ceiling);
- sampled codes: `--candidates` candidates from the exported decoder (TextToSpeech.candidates), the CLVP-best one and
  the first one (unranked, what a random pick gets), cut at their stop token, through the same preview.
WER and CER are corpus-level (edit distances summed over the sentences), after the normaliser of `eval.asr`.

The machine is shared with other jobs: wall times and throughput depend on its load (recorded in the JSON).

Usage: python benchmarks/train_models.py WORK_DIR [--sentences 100] [--candidates 8] [--max-new-tokens 300]
       [--temperature 0.8] [--top-p 0.8] [--seed 0] [--threads 2] [--no-asr]
       [--out benchmarks/results/train_models.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import finish, format_table, load_average, result_header, write_json_atomic  # noqa: E402

from tortoise_clvp.frontend.audio import load_audio, save_audio  # noqa: E402
from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, load_mel_norms  # noqa: E402
from tortoise_clvp.train.codes import MEL_NORMS_FILE, load_codes, load_dvae  # noqa: E402
from tortoise_clvp.train.config import (  # noqa: E402
    AUTOREGRESSIVE_DIR,
    CLVP_DIR,
    CODES_DIR,
    EXPORT_DIR,
    TOKENIZER_DIR,
    TRAIN_SPLIT,
    VALID_SPLIT,
)
from tortoise_clvp.train.loop import METRICS_FILE  # noqa: E402
from tortoise_clvp.train.metadata import corpus_dir, read_metadata  # noqa: E402
from tortoise_clvp.pipeline.sampling import SamplingOptions  # noqa: E402
from tortoise_clvp.train.preview import codes_to_audio  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_models.json"
STAGES = {"dvae": CODES_DIR, "autoregressive": AUTOREGRESSIVE_DIR, "clvp": CLVP_DIR}
PREVIEWS_DIR = "previews"  # a few preview wavs per kind go to WORK_DIR/previews, for listening
SAVED_PREVIEWS = 3


def stage_summary(work_dir: Path, parts: dict[str, str] = STAGES) -> dict[str, Any]:
    """Each trained stage's steps, wall time, throughput and evaluations, from its metrics.json (`parts`: part name
    -> its folder in the work folder)."""
    stages = {}
    for part, folder in parts.items():
        path = work_dir / folder / METRICS_FILE
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        history = metrics.get("history", [])
        best = next((entry for entry in history if entry.get("step") == metrics.get("best_step")), {})
        stages[part] = {
            "steps": metrics.get("step"),
            "planned_steps": metrics.get("steps"),
            "finished": metrics.get("finished"),
            "train_seconds": metrics.get("train_seconds"),
            "throughput": metrics.get("throughput"),
            "parameters": metrics.get("parameters"),
            "best": best,
            "curve": history,
        }
    return stages


def intelligibility(work_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """WER/CER of the corpus audio, the preview of ground-truth codes and the preview of sampled codes."""
    from tortoise_clvp import TextToSpeech
    from tortoise_clvp.eval.asr import Transcriber, error_rates
    from tortoise_clvp.pipeline.decoding import DecodingOptions

    utterances = read_metadata(work_dir)
    codes = load_codes(work_dir)
    index = {utterance_id: i for i, utterance_id in enumerate(codes.ids)}
    norms = load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE)
    dvae = load_dvae(work_dir)
    tts = TextToSpeech.from_local(work_dir / EXPORT_DIR)
    asr = Transcriber(threads=args.threads)
    folder = corpus_dir(work_dir)
    references = {}
    for utterance in utterances:
        if utterance.split == TRAIN_SPLIT:
            references.setdefault(utterance.voice, utterance)
    chosen, seen = [], set()
    for utterance in utterances:
        if utterance.split == VALID_SPLIT and utterance.text not in seen and utterance.voice in references:
            seen.add(utterance.text)
            chosen.append(utterance)
    chosen = chosen[: args.sentences]
    sampling = SamplingOptions(temperature=args.temperature, top_p=args.top_p)
    options = DecodingOptions(sampling=sampling, num_candidates=args.candidates, batch_size=args.candidates,
                              max_new_tokens=args.max_new_tokens)
    kinds = ("corpus_audio", "ground_truth_codes", "sampled_clvp_best", "sampled_first")
    transcripts: dict[str, list[str]] = {kind: [] for kind in kinds}
    rows, started = [], time.perf_counter()
    previews = work_dir / PREVIEWS_DIR
    previews.mkdir(exist_ok=True)
    for number, utterance in enumerate(chosen):
        audio = {"corpus_audio": load_audio(folder / utterance.wav_22k, CONDITIONING_SAMPLE_RATE)[0]}
        audio["ground_truth_codes"] = codes_to_audio(dvae, codes.codes(index[utterance.id]), norms)
        clip = folder / references[utterance.voice].wav_22k
        result = tts.candidates(utterance.text, [clip], options, k=1, seed=args.seed + number)
        best, first = int(result.best[0]), 0
        lengths = {"ground_truth": codes.length(index[utterance.id])}
        for kind, row in (("sampled_clvp_best", best), ("sampled_first", first)):
            length = max(int(result.lengths[row]), 1)
            lengths[kind] = int(result.lengths[row])
            audio[kind] = codes_to_audio(dvae, result.raw_codes[row, :length], norms)
        heard = {kind: asr.transcribe(audio[kind], CONDITIONING_SAMPLE_RATE) for kind in kinds}
        for kind in kinds:
            transcripts[kind].append(heard[kind])
            if number < SAVED_PREVIEWS:
                save_audio(previews / f"{utterance.id}_{kind}.wav", audio[kind], CONDITIONING_SAMPLE_RATE)
        rows.append({"id": utterance.id, "voice": utterance.voice, "text": utterance.text, "lengths": lengths,
                     "transcripts": heard, "clvp_scores": result.ranked.scores.tolist()})
        print(f"  {number + 1}/{len(chosen)} {utterance.text!r} -> best {heard['sampled_clvp_best']!r}", flush=True)
    texts = [utterance.text for utterance in chosen]
    rates = {kind: vars(error_rates(texts, transcripts[kind])) for kind in kinds}
    return {"sentences": len(chosen), "seconds": time.perf_counter() - started, "rates": rates, "items": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=SamplingOptions().temperature)
    parser.add_argument("--top-p", type=float, default=SamplingOptions().top_p)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-asr", action="store_true", help="only the stages' own metrics")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work_dir = args.work_dir.expanduser().resolve()
    result = result_header("train_models", args, __doc__.split("\n\n")[1], skip_args=("out",))
    result["work_dir"] = str(work_dir)
    result["stages"] = stage_summary(work_dir)
    result["codes"] = load_codes(work_dir).summary
    rows = [
        [part, s["steps"], s["planned_steps"], (s["train_seconds"] or 0) / 60, json.dumps(s["throughput"]),
         ", ".join(f"{k}={v:.4g}" for k, v in s["best"].items() if k not in ("step", "seconds") and isinstance(v, float))]
        for part, s in result["stages"].items()
    ]
    print(format_table(["stage", "steps", "of", "train min", "throughput (last)", "best held-out"], rows))
    codes = result["codes"]
    print(f"\ncodes: {codes['codebook_size']} codes, calm {codes['calm_code']}, held-out {codes.get('valid')}, "
          f"train perplexity {codes.get('train_perplexity'):.1f}, usage {codes.get('train_usage'):.2f}")
    write_json_atomic(args.out, result)
    if not args.no_asr:
        result["intelligibility"] = intelligibility(work_dir, args)
        rates = result["intelligibility"]["rates"]
        print()
        print(format_table(["audio", "WER", "CER"], [[kind, r["wer"], r["cer"]] for kind, r in rates.items()], digits=3))
    result["system"]["loadavg_1m_at_end"] = load_average()
    finish(args.out, result)


if __name__ == "__main__":
    main()
