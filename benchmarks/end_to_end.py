"""Text -> 24 kHz speech end to end on CPU with full-size random weights: wall time per stage, real-time factor, memory.

Every model is built at its released size (``AutoregressiveConfig.RELEASED``, ``ClvpConfig.RELEASED``,
``DiffusionConfig.RELEASED``, ``VocoderConfig.RELEASED``) under fixed seeds (``--seed`` + 0, 1, 2, 3; the vocoder's
weights drawn N(0, 0.02) as in ``vocoder.py``, so its output stays finite) and saved once, in a child process, into a
native model directory under a temporary folder (``weights.native.save_native``, with Tortoise's ``tokenizer.json``
and ``mel_norms.pth`` from the shared reference); this process then loads it with ``TextToSpeech.from_local`` (what a
user runs: the decoder's and CLVP's linears get oneDNN-packed weights) and calls ``generate`` on one sentence with the
bundled voice ``voices/piper_joe/clip1.flac``. Random weights would babble up to 500 tokens, so every candidate is
forced to exactly ``--tokens`` speech tokens (``min_new_tokens = max_new_tokens``, via ``dataclasses.replace`` on the
preset's decoding options); everything else is the preset's: candidates, batch size, sampler, steps, guidance.

Each preset gets one warm-up (the same preset shrunk to 2 candidates x 4 tokens and 2 diffusion steps), then
``--repeats`` timed ``generate`` calls (seed ``--seed``). Reported: the total wall time (``time.perf_counter`` around
the call), ``Speech.timings`` per stage (conditioning, sampling, reranking, latents, diffusion, vocoder) and the rest
of the wall time, which is not attributed to a stage, the seconds of audio produced, the real-time factor (wall /
audio seconds; < 1 is faster than real time) and the peak resident memory during the call (Linux: VmHWM after
resetting it through /proc/self/clear_refs; else the process-wide ``ru_maxrss``).

The machine is shared: the 1-minute load average is recorded before and after each call. The original's per-stage
anchors from the shared ``timings_cpu2.json`` (same 2-core class, 2 threads) are printed for context only; they are
single stages, not a whole generation.

Usage: python benchmarks/end_to_end.py [--presets ultra_fast,ultra_fast_dpm] [--tokens 100] [--repeats 1]
       [--text "..."] [--voice voices/piper_joe/clip1.flac] [--threads 2] [--seed 0] [--model-dir DIR]
       [--keep-model-dir] [--out benchmarks/results/end_to_end.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import (  # noqa: E402
    REPO_ROOT,
    current_rss_mb,
    finish,
    format_table,
    load_average,
    load_reference,
    load_span,
    peak_rss_mb,
    reference_dir,
    reset_peak_rss,
    result_header,
    vm_hwm_mb,
    write_json_atomic,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "end_to_end.json"
DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog by the riverbank."
DEFAULT_VOICE = REPO_ROOT / "voices" / "piper_joe" / "clip1.flac"
STAGES = ("conditioning", "sampling", "reranking", "latents", "diffusion", "vocoder")
VOCODER_WEIGHT_STD = 0.02  # as benchmarks/vocoder.py: random gates that do not saturate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="ultra_fast,ultra_fast_dpm", help="comma-separated preset names")
    parser.add_argument("--tokens", type=int, default=100, help="speech tokens per candidate, forced (min = max)")
    parser.add_argument("--repeats", type=int, default=1, help="timed generate calls per preset")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--voice", type=Path, default=DEFAULT_VOICE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="an existing native directory of full-size random weights (default: build one in a temp dir)")
    parser.add_argument("--keep-model-dir", action="store_true", help="do not delete the built model directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    args.preset_names = [name.strip() for name in args.presets.split(",") if name.strip()]
    if args.tokens < 1 or args.repeats < 1 or not args.preset_names:
        parser.error("need --tokens >= 1, --repeats >= 1 and at least one preset")
    return args


# building the model directory (child process) ----------------------------------------------------------------------
def build_model_dir(destination: Path, seed: int) -> dict[str, Any]:
    """Random full-size models under fixed seeds -> a native directory at `destination`."""
    from tortoise_clvp.config import (
        AutoregressiveConfig,
        ClvpConfig,
        DiffusionConfig,
        VocoderConfig,
    )
    from tortoise_clvp.models.autoregressive import AutoregressiveModel
    from tortoise_clvp.models.clvp import ClvpModel
    from tortoise_clvp.models.diffusion import DiffusionModel
    from tortoise_clvp.models.vocoder import UnivNetVocoder
    from tortoise_clvp.weights.native import save_native

    folder = reference_dir()
    assets = None if folder is None else folder / "tortoise"
    if assets is None or not (assets / "tokenizer.json").is_file() or not (assets / "mel_norms.pth").is_file():
        raise SystemExit("no tokenizer.json / mel_norms.pth: set $CLVP_REFERENCE_DIR to the shared reference")
    builders = {
        "autoregressive": lambda: AutoregressiveModel(AutoregressiveConfig.RELEASED),
        "clvp": lambda: ClvpModel(ClvpConfig.RELEASED),
        "diffusion": lambda: DiffusionModel(DiffusionConfig.RELEASED),
        "vocoder": lambda: UnivNetVocoder(VocoderConfig.RELEASED),
    }
    parts, info = {}, {}
    for offset, (name, build) in enumerate(builders.items()):
        start = time.perf_counter()
        torch.manual_seed(seed + offset)
        model = build().eval().requires_grad_(False)
        if name == "vocoder":
            with torch.no_grad():
                for param in model.parameters():
                    param.normal_(0.0, VOCODER_WEIGHT_STD)
        parts[name] = model
        info[name] = {"seed": seed + offset, "n_params": sum(p.numel() for p in model.parameters()),
                      "build_s": time.perf_counter() - start}
    start = time.perf_counter()
    save_native(destination, parts, assets)
    info["save_s"] = time.perf_counter() - start
    info["assets"] = str(assets)
    info["bytes"] = sum(f.stat().st_size for f in destination.iterdir() if f.is_file())
    return info


def build_in_child(destination: Path, seed: int) -> dict[str, Any]:
    """Run the build in a child process so this process's peak memory is the pipeline's alone."""
    import json

    info_file = destination.parent / "build_info.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--build-only", str(destination), "--seed", str(seed)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    info = json.loads(info_file.read_text())
    info["child_wall_s"] = time.perf_counter() - start
    return info


# running -----------------------------------------------------------------------------------------------------------
def forced_options(name: str, tokens: int, candidates: int | None = None, steps: int | None = None) -> Any:
    """The preset with every candidate forced to `tokens` speech tokens (and optionally fewer candidates / steps)."""
    from tortoise_clvp.presets import preset

    options = preset(name)
    decoding = dataclasses.replace(options.decoding, max_new_tokens=tokens, min_new_tokens=tokens)
    if candidates is not None:
        decoding = decoding.with_candidates(candidates)
    diffusion = options.diffusion if steps is None else dataclasses.replace(options.diffusion, steps=steps)
    return dataclasses.replace(options, decoding=decoding, diffusion=diffusion)


def describe(options: Any) -> dict[str, Any]:
    d, s = options.decoding, options.diffusion
    return {"num_candidates": d.num_candidates, "batch_size": d.batch_size, "max_new_tokens": d.max_new_tokens,
            "min_new_tokens": d.min_new_tokens, "sampler": s.sampler, "diffusion_steps": s.steps,
            "cond_free": s.cond_free, "cond_free_k": s.cond_free_k, "k": options.k}


def timed_generate(tts: Any, text: str, voice: Path, options: Any, seed: int) -> dict[str, Any]:
    gc.collect()
    load_before = load_average()
    reset = reset_peak_rss()
    start = time.perf_counter()
    speech = tts.generate(text, [str(voice)], options, seed=seed)
    wall = time.perf_counter() - start
    timings = {stage: float(speech.timings.get(stage, 0.0)) for stage in STAGES}
    extra = {k: float(v) for k, v in speech.timings.items() if k not in STAGES}
    attributed = sum(timings.values()) + sum(extra.values())
    waveform = speech.waveform
    codes = speech.candidates.raw_codes
    return {
        "wall_s": wall,
        "stages_s": timings,
        "other_stages_s": extra,
        "unattributed_s": wall - attributed,
        "audio_seconds": speech.duration,
        "real_time_factor": wall / speech.duration,
        "samples": int(waveform.shape[-1]),
        "sample_rate": speech.sample_rate,
        "waveform_finite": bool(torch.isfinite(waveform).all()),
        "waveform_peak": float(waveform.abs().max()),
        "raw_codes_shape": list(codes.shape),
        "latent_frames": [int(latents.shape[0]) for latents in speech.candidates.latents],
        "peak_rss_mb_during_call": vm_hwm_mb() if reset else None,
        "peak_rss_mb_process": peak_rss_mb(),
        "loadavg_1m": [load_before, load_average()],
    }


def reference_context() -> dict[str, Any] | None:
    data = load_reference("timings_cpu2.json")
    if not data:
        return None
    original = data.get("original", {})
    pick = lambda name, *keys: {k: original[name][k] for k in keys if k in original.get(name, {})}  # noqa: E731
    return {
        "path": data["path"], "machine": data.get("machine"),
        "ar1": pick("ar1", "candidates", "new_tokens", "median_s"),
        "ar4": pick("ar4", "candidates", "new_tokens", "median_s"),
        "clvp16": pick("clvp16", "candidates", "speech_tokens", "median_s"),
        "diffusion_step": pick("diffusion", "latent_tokens", "output_frames", "median_s", "batch2_median_s",
                               "timestep_independent_s"),
        "vocoder": pick("vocoder", "audio_seconds", "median_s", "seconds_per_audio_second"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.build_only is not None:  # child: build, save, report, exit
        import json

        info = build_model_dir(args.build_only, args.seed)
        (args.build_only.parent / "build_info.json").write_text(json.dumps(info))
        return 0

    from tortoise_clvp.api import TextToSpeech
    from tortoise_clvp.presets import PRESETS

    unknown = [name for name in args.preset_names if name not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    if not args.voice.is_file():
        raise SystemExit(f"voice clip {args.voice} not found")
    result: dict[str, Any] = {
        **result_header("end_to_end", args, " ".join(__doc__.split("\n\n")[1:4]), ("build_only",)),
        "reference_original": reference_context(),
    }

    temp_root = None
    if args.model_dir is None:
        temp_root = Path(tempfile.mkdtemp(prefix="clvp_e2e_"))
        model_dir = temp_root / "model"
        print(f"building full-size random models (seed {args.seed}) into {model_dir} (child process) ...", flush=True)
        result["build"] = build_in_child(model_dir, args.seed)
    else:
        model_dir = args.model_dir
        result["build"] = {"model_dir": str(model_dir), "prebuilt": True}
    try:
        start = time.perf_counter()
        tts = TextToSpeech.from_local(model_dir)
        result["load"] = {"load_s": time.perf_counter() - start, "rss_mb": current_rss_mb(),
                          "peak_rss_mb": peak_rss_mb(), "layout": tts.models.layout}
        print(f"loaded in {result['load']['load_s']:.1f} s, RSS {result['load']['rss_mb']:.0f} MiB", flush=True)

        result["presets"] = {}
        for name in args.preset_names:
            options = forced_options(name, args.tokens)
            entry: dict[str, Any] = {"options": describe(options)}
            print(f"\n{name}: {describe(options)}", flush=True)
            warm = forced_options(name, min(4, args.tokens), candidates=2, steps=min(2, options.diffusion.steps))
            start = time.perf_counter()
            tts.generate(args.text, [str(args.voice)], warm, seed=args.seed)
            entry["warmup_s"] = time.perf_counter() - start
            print(f"  warm-up {entry['warmup_s']:.1f} s", flush=True)
            entry["runs"] = []
            for repeat in range(args.repeats):
                run = timed_generate(tts, args.text, args.voice, options, args.seed)
                entry["runs"].append(run)
                stages = ", ".join(f"{k} {v:.1f}" for k, v in run["stages_s"].items())
                print(f"  run {repeat + 1}: {run['wall_s']:.1f} s for {run['audio_seconds']:.2f} s of audio "
                      f"(RTF {run['real_time_factor']:.1f}); {stages}, unattributed {run['unattributed_s']:.1f} s; "
                      f"load {run['loadavg_1m'][0]:.2f} -> {run['loadavg_1m'][1]:.2f}", flush=True)
                write_json_atomic(args.out, {**result, "presets": {**result["presets"], name: entry}})
            best = min(entry["runs"], key=lambda r: r["wall_s"])
            entry["median_wall_s"] = sorted(r["wall_s"] for r in entry["runs"])[len(entry["runs"]) // 2]
            entry["min_wall_s"] = best["wall_s"]
            result["presets"][name] = entry
            write_json_atomic(args.out, result)
    finally:
        if temp_root is not None and not args.keep_model_dir:
            shutil.rmtree(temp_root, ignore_errors=True)
        elif temp_root is not None:
            print(f"kept the model directory {model_dir}")

    result["memory"] = {"peak_rss_mb_process": peak_rss_mb(), "current_rss_mb": current_rss_mb()}
    result["system"]["loadavg_1m_at_end"] = load_average()

    names = list(result["presets"])
    if len(names) >= 2:
        base = result["presets"][names[0]]["median_wall_s"]
        result["speedup_vs_first"] = {n: base / result["presets"][n]["median_wall_s"] for n in names[1:]}

    load = load_span(result["system"])
    print(f"\nEnd to end, full-size random weights, CPU fp32, {args.threads} thread(s), {args.tokens} forced tokens per "
          f"candidate, one sentence, voice {args.voice.name}; {args.repeats} timed run(s) per preset after a warm-up "
          f"(1-min load average {load})")
    headers = ["preset", "cands", "sampler@steps", "total s", *STAGES, "unattr.", "audio s", "RTF", "peak RSS MiB",
               "load"]
    rows = []
    for name, entry in result["presets"].items():
        o = entry["options"]
        for run in entry["runs"]:
            rows.append([name, o["num_candidates"],
                         f"{o['sampler']}@{o['diffusion_steps']}" + (" cf" if o["cond_free"] else ""),
                         run["wall_s"], *(run["stages_s"][s] for s in STAGES), run["unattributed_s"],
                         run["audio_seconds"], run["real_time_factor"],
                         run["peak_rss_mb_during_call"] if run["peak_rss_mb_during_call"] else run["peak_rss_mb_process"],
                         f"{run['loadavg_1m'][0]:.2f}/{run['loadavg_1m'][1]:.2f}"])
    print(format_table(headers, rows, digits=1))
    print("  cf = conditioning-free guidance (one batch-2 forward per step); unattr. = wall time no stage timing covers "
          "(e.g. the voice's conditioning when generate is given clips); RTF = wall / audio seconds; peak RSS during "
          "the call (VmHWM reset before it)")
    for name, ratio in result.get("speedup_vs_first", {}).items():
        print(f"  {names[0]} / {name} total wall time: {ratio:.2f}x (same run, interleaving not applied)")
    print(f"  model directory: load {result['load']['load_s']:.1f} s; process peak RSS "
          f"{result['memory']['peak_rss_mb_process']:.0f} MiB (the build ran in a child process)")
    reference = result["reference_original"]
    if reference:
        print(f"\noriginal per-stage anchors ({reference['path']}, single stages, not a pipeline): AR "
              f"{reference['ar4'].get('candidates')} candidates x {reference['ar4'].get('new_tokens')} tokens "
              f"{reference['ar4'].get('median_s', 0):.1f} s; CLVP 16 candidates {reference['clvp16'].get('median_s', 0):.1f} s; "
              f"one guided diffusion step {reference['diffusion_step'].get('median_s', 0):.2f} s (batched "
              f"{reference['diffusion_step'].get('batch2_median_s', 0):.2f} s); vocoder "
              f"{reference['vocoder'].get('seconds_per_audio_second', 0):.3f} s per audio second")
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
