"""What the waveform stages of the training recipe cost and achieve: the diffusion decoder and the vocoder.

Cost, per stage: what its metrics.json recorded (steps, training wall time, throughput, the best held-out
evaluation), and a fresh timing here of `--steps` training steps at the recipe's full settings (after one warm-up
step; a new model, nothing written), with the machine's load alongside: the vocoder on the work folder's audio, the
diffusion decoder on batches of its full window (`max_codes` codes; real batches are cut to their shortest item, so
this is the most a step costs) with the trained decoder's latent width.

Quality, on `--sentences` held-out (valid) sentences of the training voices, against the corpus's 24 kHz clip:
log-mel L1 and multi-resolution STFT loss, and, scored by Whisper tiny.en (the `eval` extra), WER and CER of
- corpus audio: the clip itself (the ceiling of everything);
- vocoded ground truth: the clip's own mel through the trained vocoder;
- diffusion from true codes: the clip's true codes made into latents as the diffusion stage makes them (the trained
  decoder, conditioned on other clips of the voice), sampled by the trained diffusion decoder with the sampler of
  `--preset` (default fast_dpm: DPM-Solver++, 20 steps, guidance) and vocoded: the waveform stages' ceiling when
  the decoder samples the right codes.
WER and CER are corpus-level (edit distances summed over the sentences), after the normaliser of `eval.asr`.

Usage: python benchmarks/train_waveform.py WORK_DIR [--sentences 50] [--steps 5] [--preset fast_dpm] [--seed 0]
       [--threads 1] [--no-asr] [--out benchmarks/results/train_waveform.json]
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
from train_models import stage_summary  # noqa: E402

from tortoise_clvp.frontend.audio import load_audio, save_audio  # noqa: E402
from tortoise_clvp.frontend.mel import (  # noqa: E402
    CONDITIONING_SAMPLE_RATE,
    HOP_LENGTH,
    OUTPUT_SAMPLE_RATE,
    UNIVNET_N_MELS,
    load_mel_norms,
    univnet_mel,
)
from tortoise_clvp.frontend.text import BpeTokenizer  # noqa: E402
from tortoise_clvp.models.vocoder import UnivNetVocoder  # noqa: E402
from tortoise_clvp.models.diffusion import output_frames  # noqa: E402
from tortoise_clvp.pipeline.conditioning import DIFFUSION_CONDITIONING_SAMPLES, diffusion_conditioning  # noqa: E402
from tortoise_clvp.pipeline.diffusion import latents_to_mel  # noqa: E402
from tortoise_clvp.presets import preset  # noqa: E402
from tortoise_clvp.train.autoregressive import ArData, load_decoder  # noqa: E402
from tortoise_clvp.train.codes import MEL_NORMS_FILE, load_codes  # noqa: E402
from tortoise_clvp.train.config import (  # noqa: E402
    AUTOREGRESSIVE_DIR,
    DIFFUSION_DIR,
    TOKENIZER_DIR,
    TRAIN_SPLIT,
    VALID_SPLIT,
    VOCODER_DIR,
    LoopConfig,
    RecipeConfig,
)
from tortoise_clvp.train.diffusion import load_diffusion_decoder, new_diffusion_model, training_loss  # noqa: E402
from tortoise_clvp.train.diffusion_examples import prepare  # noqa: E402
from tortoise_clvp.train.loop import METRICS_FILE, learning_rate_at, step_generator  # noqa: E402
from tortoise_clvp.train.mel_cache import load_mel_cache  # noqa: E402
from tortoise_clvp.train.metadata import corpus_dir, read_metadata  # noqa: E402
from tortoise_clvp.train.stft_loss import spectral_losses  # noqa: E402
from tortoise_clvp.train.vocoder import corpus_clips, load_vocoder, training_batch  # noqa: E402
from tortoise_clvp.train.vocoder import training_loss as vocoder_loss  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_waveform.json"
STAGES = {"diffusion": DIFFUSION_DIR, "vocoder": VOCODER_DIR}
PREVIEWS_DIR = "previews"  # a few wavs per kind go to WORK_DIR/previews, for listening
SAVED_PREVIEWS = 3
KINDS = ("corpus_audio", "vocoded_ground_truth", "diffusion_from_true_codes")
DEFAULT_PRESET = "fast_dpm"
CONDITIONING_FRAMES = DIFFUSION_CONDITIONING_SAMPLES // HOP_LENGTH + 1


def time_steps(model: torch.nn.Module, loop: LoopConfig, loss: Callable[[int], Any], steps: int) -> dict[str, Any]:
    """Median seconds per training step (forward, backward, AdamW step) over `steps` steps after a warm-up step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate_at(loop, 0), betas=loop.betas)
    model.train()
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        value, _ = loss(step)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    measured = sorted(times[1:])
    return {"seconds_per_step": measured[len(measured) // 2], "times_s": times[1:]}


def step_costs(work_dir: Path, config: RecipeConfig, steps: int) -> dict[str, Any]:
    """Fresh timings of both stages' training steps at the full settings."""
    costs: dict[str, Any] = {}
    settings = config.vocoder
    vocoder = UnivNetVocoder(settings.model)
    clips = corpus_clips(work_dir, TRAIN_SPLIT)

    def vocoder_step(step: int):
        return vocoder_loss(vocoder, settings, training_batch(clips, settings, step_generator(0, step)))

    costs["vocoder"] = time_steps(vocoder, settings.loop, vocoder_step, steps)
    audio = settings.batch_size * settings.segment_frames * HOP_LENGTH / OUTPUT_SAMPLE_RATE
    costs["vocoder"]["audio_s_per_s"] = audio / costs["vocoder"]["seconds_per_step"]
    if (work_dir / AUTOREGRESSIVE_DIR / METRICS_FILE).is_file():  # the decoder sets the latent width
        decoder = load_decoder(work_dir).config
        settings = config.diffusion
        diffusion = new_diffusion_model(
            replace(settings.model, in_latent_channels=decoder.model_dim, in_tokens=decoder.number_mel_codes)
        )
        rows, codes = settings.batch_size, settings.max_codes
        batch = (torch.randn(rows, codes, decoder.model_dim), torch.randn(rows, 1, UNIVNET_N_MELS, CONDITIONING_FRAMES),
                 torch.rand(rows, UNIVNET_N_MELS, output_frames(codes)) * 2 - 1)

        def diffusion_step(step: int):
            return training_loss(diffusion, settings, batch, step_generator(0, step))

        costs["diffusion"] = time_steps(diffusion, settings.loop, diffusion_step, steps)
        costs["diffusion"]["items_per_s"] = rows / costs["diffusion"]["seconds_per_step"]
    return costs


@torch.no_grad()
def quality(work_dir: Path, config: RecipeConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Spectral losses and (unless --no-asr) WER/CER of corpus audio, vocoded ground truth and diffusion from true
    codes, on held-out sentences."""
    utterances = read_metadata(work_dir)
    vocoder = load_vocoder(work_dir)
    chosen = [index for index, utterance in enumerate(utterances) if utterance.split == VALID_SPLIT]
    diffusion = None
    if (work_dir / DIFFUSION_DIR / METRICS_FILE).is_file():  # the decoder, codes and diffusion decoder are trained
        norms = load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE)
        tokenizer = BpeTokenizer(work_dir / TOKENIZER_DIR)
        data = ArData(utterances, tokenizer, load_codes(work_dir), load_mel_cache(work_dir, norms))
        decoder, diffusion = load_decoder(work_dir), load_diffusion_decoder(work_dir)
        chosen = data.split(VALID_SPLIT)  # those whose voice has training clips to condition on
    chosen = chosen[: args.sentences]
    kinds = KINDS if diffusion is not None else KINDS[:2]
    asr = None
    if not args.no_asr:
        from tortoise_clvp.eval.asr import Transcriber

        asr = Transcriber(threads=args.threads)
    folder = corpus_dir(work_dir)
    previews = work_dir / PREVIEWS_DIR
    previews.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    losses: dict[str, dict[str, float]] = {kind: {} for kind in kinds[1:]}
    transcripts: dict[str, list[str]] = {kind: [] for kind in kinds}
    started = time.perf_counter()
    for number, index in enumerate(chosen):
        utterance = utterances[index]
        truth = load_audio(folder / utterance.wav_24k, OUTPUT_SAMPLE_RATE)[0]
        audio = {"corpus_audio": truth}
        audio["vocoded_ground_truth"] = vocoder.inference(univnet_mel(truth)[None], generator)[0, 0]
        if diffusion is not None:
            latents, _ = prepare(data, index, decoder, config.autoregressive.conditioning_clips, folder, config.seed)
            others = data.pools[utterance.voice]
            reference = load_audio(folder / utterances[others[number % len(others)]].wav_22k, CONDITIONING_SAMPLE_RATE)
            voice = diffusion_conditioning(diffusion, [reference])
            mel = latents_to_mel(diffusion, latents, voice, preset(args.preset).diffusion, generator)
            audio["diffusion_from_true_codes"] = vocoder.inference(mel[None], generator)[0, 0]
        for kind in kinds[1:]:
            made = audio[kind][: truth.shape[0]]
            made = torch.nn.functional.pad(made, (0, truth.shape[0] - made.shape[0]))
            for name, value in spectral_losses(made[None], truth[None]).as_floats().items():
                losses[kind][name] = losses[kind].get(name, 0.0) + value / len(chosen)
        for kind in kinds:
            if number < SAVED_PREVIEWS:
                save_audio(previews / f"{utterance.id}_{kind}.wav", audio[kind], OUTPUT_SAMPLE_RATE)
            if asr is not None:
                transcripts[kind].append(asr.transcribe(audio[kind], OUTPUT_SAMPLE_RATE))
        print(f"  {number + 1}/{len(chosen)} {utterance.text!r}", flush=True)
    result: dict[str, Any] = {"sentences": len(chosen), "seconds": time.perf_counter() - started, "losses": losses}
    if asr is not None:
        from tortoise_clvp.eval.asr import error_rates

        texts = [utterances[i].text for i in chosen]
        result["rates"] = {kind: vars(error_rates(texts, transcripts[kind])) for kind in kinds}
        result["transcripts"] = transcripts
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--sentences", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per stage (0: none)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="whose diffusion sampler makes the true codes' mels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-asr", action="store_true", help="spectral losses only")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work_dir = args.work_dir.expanduser().resolve()
    config = RecipeConfig()
    result = result_header("train_waveform", args, __doc__.split("\n\n")[1], skip_args=("out",))
    result["work_dir"] = str(work_dir)
    result["stages"] = stage_summary(work_dir, STAGES)
    rows = []
    for part, s in result["stages"].items():
        best = {k: v for k, v in s["best"].items() if k not in ("step", "seconds") and isinstance(v, float)}
        rows.append([part, s["steps"], s["planned_steps"], (s["train_seconds"] or 0) / 60,
                     ", ".join(f"{k}={v:.4g}" for k, v in best.items())])
    print(format_table(["stage", "steps", "of", "train min", "best held-out"], rows))
    if args.steps:
        result["step_costs"] = step_costs(work_dir, config, args.steps)
        result["system"]["loadavg_1m_after_timing"] = load_average()
        rows = [[part, c["seconds_per_step"], c.get("audio_s_per_s", c.get("items_per_s"))]
                for part, c in result["step_costs"].items()]
        print()
        print(format_table(["stage", "s/step", "audio s/s (vocoder), items/s (diffusion)"], rows, digits=3))
    write_json_atomic(args.out, result)
    if (work_dir / VOCODER_DIR / METRICS_FILE).is_file():
        result["quality"] = quality(work_dir, config, args)
        print()
        losses = result["quality"]["losses"]
        rows = [[kind, value["mel_l1"], value["stft"]] for kind, value in losses.items()]
        print(format_table(["audio", "mel L1", "STFT"], rows, digits=3))
        if "rates" in result["quality"]:
            rates = result["quality"]["rates"]
            print(format_table(["audio", "WER", "CER"], [[k, r["wer"], r["cer"]] for k, r in rates.items()], digits=3))
    result["system"]["loadavg_1m_at_end"] = load_average()
    finish(args.out, result)


if __name__ == "__main__":
    main()
