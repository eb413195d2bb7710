"""Which generation settings a model is heard best with: diffusion samplers and decoder sampling, judged by an ASR.

Sentences and voices are those of `intelligibility.py` (the first --sentences held-out sentences of the training
voices of a work folder's corpus, optionally leaving out what an --exclude-trained-on corpus trained on; each voice
conditioned on --reference-clips of its other clips). Two kinds of rows, scored by Whisper tiny.en (WER/CER after
`eval.asr`'s normaliser, corpus-level):
- diffusion / SAMPLER: the sentence's TRUE speech codes, laid out and cut as a sampled candidate, made into latents
  by the model's decoder (`train.diffusion_examples.prepare`), then sampled by the diffusion decoder with that
  sampler and vocoded. This isolates the diffusion stage from the decoder's sampling.
- decoding / SETTINGS: `generate` end to end with those decoder sampling settings (temperature, repetition
  penalty, candidates) and the --diffusion-row's sampler, so the rows differ only in how codes are sampled.
Each row also records its seconds per sentence (on a shared machine, a rough cost).

Usage: python benchmarks/presets_by_ear.py WORK_DIR [--models-dir DIR] [--sentences 48]
       [--exclude-trained-on OTHER_WORK_DIR ...] [--out benchmarks/results/presets_by_ear.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import finish, format_table, load_average, result_header, write_json_atomic  # noqa: E402
from intelligibility import pick, trained_texts, voice_pools  # noqa: E402

from tortoise_clvp import TextToSpeech  # noqa: E402
from tortoise_clvp.eval.asr import Transcriber, error_rates  # noqa: E402
from tortoise_clvp.frontend.mel import OUTPUT_SAMPLE_RATE, load_mel_norms  # noqa: E402
from tortoise_clvp.frontend.text import BpeTokenizer  # noqa: E402
from tortoise_clvp.pipeline.diffusion import latents_to_mel  # noqa: E402
from tortoise_clvp.pipeline.samplers import SamplerOptions  # noqa: E402
from tortoise_clvp.pipeline.sampling import SamplingOptions  # noqa: E402
from tortoise_clvp.presets import preset  # noqa: E402
from tortoise_clvp.train.autoregressive import ArData  # noqa: E402
from tortoise_clvp.train.codes import MEL_NORMS_FILE, load_codes  # noqa: E402
from tortoise_clvp.train.config import TOKENIZER_DIR  # noqa: E402
from tortoise_clvp.train.diffusion_examples import prepare  # noqa: E402
from tortoise_clvp.train.mel_cache import load_mel_cache  # noqa: E402
from tortoise_clvp.train.metadata import corpus_dir, read_metadata  # noqa: E402
from tortoise_clvp.weights.discovery import resolve_models_dir  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "presets_by_ear.json"
GROUP = "training voices"
DIFFUSION_ROWS = {
    "dpm++2m, 10 steps (ultra_fast_dpm)": SamplerOptions("dpm++2m", 10, cond_free=False),
    "dpm++2m, 20 steps, guided (fast_dpm)": SamplerOptions("dpm++2m", 20),
    "dpm++2m, 10 steps, from zeros": SamplerOptions("dpm++2m", 10, cond_free=False, temperature=0.0),
    "ddim, 2 steps": SamplerOptions("ddim", 2, cond_free=False),
    "ddim, 4 steps (ultra_fast_ddim)": SamplerOptions("ddim", 4, cond_free=False),
    "ddim, 8 steps": SamplerOptions("ddim", 8, cond_free=False),
    "ddim, 4 steps, guided": SamplerOptions("ddim", 4),
}
RELEASED = SamplingOptions()  # temperature 0.8, top-p 0.8, repetition penalty 2.0
DECODING_ROWS: dict[str, tuple[SamplingOptions, int]] = {  # sampling, candidates
    "T 0.8, penalty 2.0 (the release's), 16": (RELEASED, 16),
    "T 0.8, penalty 2.0, 32": (RELEASED, 32),
    "T 0.5, penalty 2.0, 16": (replace(RELEASED, temperature=0.5), 16),
    "T 0.8, penalty 1.0, 16": (replace(RELEASED, repetition_penalty=1.0), 16),
    "T 0.5, penalty 1.0, 16 (ultra_fast_ddim)": (replace(RELEASED, temperature=0.5, repetition_penalty=1.0), 16),
    "T 0.3, penalty 1.0, 16": (replace(RELEASED, temperature=0.3, repetition_penalty=1.0), 16),
    "T 0.5, penalty 1.0, 32": (replace(RELEASED, temperature=0.5, repetition_penalty=1.0), 32),
}


def scored_row(texts: list[str], speak: Callable[[int], torch.Tensor], asr: Transcriber, label: str) -> dict[str, Any]:
    """WER/CER and seconds per sentence of `speak(i)` -> 24 kHz audio for every text."""
    transcripts, seconds = [], 0.0
    for number, text in enumerate(texts):
        started = time.perf_counter()
        audio = speak(number)
        seconds += time.perf_counter() - started
        transcripts.append(asr.transcribe(audio, OUTPUT_SAMPLE_RATE))
        print(f"  {label} {number + 1}/{len(texts)}: {text!r} -> {transcripts[-1]!r}", flush=True)
    rates = error_rates(texts, transcripts)
    return {"wer": rates.wer, "cer": rates.cer, "sentences": rates.sentences,
            "seconds_per_sentence": seconds / len(texts), "transcripts": transcripts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a training work folder (its corpus and speech codes)")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: the usual search (the bundled model)")
    parser.add_argument("--sentences", type=int, default=48)
    parser.add_argument("--reference-clips", type=int, default=3)
    parser.add_argument("--exclude-trained-on", type=Path, nargs="*", default=[], metavar="WORK_DIR")
    parser.add_argument("--diffusion-row", default="ddim, 4 steps (ultra_fast_ddim)", choices=list(DIFFUSION_ROWS),
                        help="the diffusion sampler of the decoding rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.unseen_sentences, args.id_clips = 0, 0  # what intelligibility's helpers read
    work_dir = args.work_dir.expanduser().resolve()
    utterances = read_metadata(work_dir)
    chosen = pick(utterances, args, trained_texts([p.expanduser().resolve() for p in args.exclude_trained_on]))[GROUP]
    conditioning, _ = voice_pools(utterances, {u.id for u in chosen}, args)
    models = resolve_models_dir(args.models_dir)
    result = result_header("presets_by_ear", args, __doc__.split("\n\n")[1], skip_args=("out",))
    result.update(work_dir=str(work_dir), models_dir=str(models.path), models_source=models.source, rows={})
    print(f"model: {models.path} ({models.source}); {len(chosen)} held-out sentences of the training voices")

    tts = TextToSpeech.from_local(models.path)
    folder = corpus_dir(work_dir)
    voices = {voice: tts.get_conditioning([folder / u.wav_22k for u in clips]) for voice, clips in conditioning.items()}
    norms = load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE)
    tokenizer = BpeTokenizer(work_dir / TOKENIZER_DIR)
    data = ArData(utterances, tokenizer, load_codes(work_dir), load_mel_cache(work_dir, norms))
    index_of = {u.id: i for i, u in enumerate(utterances)}
    decoder, diffusion, vocoder = tts.models.autoregressive, tts.models.diffusion, tts.models.vocoder
    clips = 2  # the decoder's conditioning clips in the examples, as the recipe's diffusion stage makes them
    with torch.inference_mode():
        latents = [prepare(data, index_of[u.id], decoder, clips, folder, args.seed)[0] for u in chosen]
    texts = [u.text for u in chosen]
    asr = Transcriber()
    rows: dict[str, dict[str, Any]] = result["rows"]

    for label, sampler in DIFFUSION_ROWS.items():
        generator = torch.Generator().manual_seed(args.seed)

        @torch.inference_mode()
        def from_true_codes(number: int) -> torch.Tensor:
            voice = voices[chosen[number].voice].diffusion
            mel = latents_to_mel(diffusion, latents[number], voice, sampler, generator)
            return vocoder.inference(mel[None], generator)[0, 0]

        rows[f"diffusion / {label}"] = scored_row(texts, from_true_codes, asr, label)
        write_json_atomic(args.out, result)

    base = replace(preset("ultra_fast_ddim"), diffusion=DIFFUSION_ROWS[args.diffusion_row])
    for label, (sampling, candidates) in DECODING_ROWS.items():
        decoding = replace(base.decoding, sampling=sampling, num_candidates=candidates, batch_size=min(candidates, 16))
        options = replace(base, decoding=decoding)

        def end_to_end(number: int) -> torch.Tensor:
            speech = tts.generate(texts[number], voices[chosen[number].voice], options, seed=args.seed + number)
            return speech.waveform.float().reshape(-1)

        rows[f"decoding / {label}"] = scored_row(texts, end_to_end, asr, label)
        write_json_atomic(args.out, result)

    table = [[label, row["wer"], row["cer"], row["seconds_per_sentence"]] for label, row in rows.items()]
    print()
    print(format_table(["row", "WER", "CER", "s / sentence"], table, digits=3))
    result["system"]["loadavg_1m_at_end"] = load_average()
    finish(args.out, result)


if __name__ == "__main__":
    main()
