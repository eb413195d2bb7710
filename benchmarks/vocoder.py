"""UnivNet vocoder speed on CPU: seconds of compute per second of 24 kHz audio, full-size random weights.

Our `UnivNetVocoder` (``VocoderConfig.RELEASED``, 14.79 M parameters, weight norm folded) vocodes a random mel of
2 s and 10 s of audio through ``inference`` (the 10 padding frames, noise and trimming included), under
``torch.inference_mode``. Each length gets one warm-up call, then ``--repeats`` timed calls; the median is quoted.

Ablations (``--ablations``, on by default, at the first length only) time the same weights with one speed-up undone
at a time, to show what each is worth on this machine:
- ``no_grad``: ``torch.no_grad`` instead of ``torch.inference_mode``;
- ``weight_norm_per_call``: torch's weight-norm parametrization on every conv, so weights are recomputed per call
  (what a model that keeps weight norm does; the original removes it at load, as we fold it);
- ``direct_layout``: the original's data layout: kernels from a channels-first conv, rearranged on every call, and
  the location-variable convolution as one 6-D einsum (our own formulation, same numbers).
The ablations run interleaved (one call of each per round) after a warm-up each; every output is compared with
ours (max |diff|), so a speed-up that changed the numbers would show.

The original's figure on the reference machine is in the shared ``timings_cpu2.json`` (0.133 s per audio second,
2 threads, 187 frames); it is printed beside ours. The machine is shared: the 1-minute load average is recorded
before and after, and timings can move 10-30 % between runs.

Usage: python benchmarks/vocoder.py [--seconds 2,10] [--repeats 3] [--threads 2] [--seed 0] [--no-ablations]
       [--out benchmarks/results/vocoder.json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import (  # noqa: E402
    Runs,
    current_rss_mb,
    finish,
    format_table,
    load_average,
    load_reference,
    load_span,
    peak_rss_mb,
    result_header,
    time_runs,
    timed,
    write_json_atomic,
)

import tortoise_clvp.models.vocoder as vocoder_module  # noqa: E402
from tortoise_clvp.config import VocoderConfig  # noqa: E402
from tortoise_clvp.models.vocoder import KernelPredictor, UnivNetVocoder  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vocoder.json"
SAMPLE_RATE = 24000  # the vocoder's output rate
TARGET_S_PER_AUDIO_S = 0.10
WEIGHT_STD = 0.02  # random weights: small enough that the gates do not saturate
MEL_MEAN, MEL_STD = -6.0, 2.0  # random log-mel input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", default="2,10", help="audio lengths to vocode, comma-separated (default 2,10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.seconds = [float(s) for s in args.seconds.split(",") if s.strip()]
    return args


def build_model(seed: int) -> UnivNetVocoder:
    torch.manual_seed(seed)
    model = UnivNetVocoder(VocoderConfig.RELEASED)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, WEIGHT_STD)
    return model.eval().requires_grad_(False)


def frames_for(seconds: float, config: VocoderConfig) -> int:
    """Mel frames for `seconds` of audio (floor, as the reference's 187 frames for 2 s)."""
    return int(seconds * SAMPLE_RATE // config.hop_length)


# ablations ---------------------------------------------------------------------------------------------------------
def _direct_layout_kernels(self: KernelPredictor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernels from channels-first convs (B, channels, L), then viewed frame-major: the rearranging copy happens
    inside every layer's convolution, as in a direct port."""
    batch, _, frames = mel.shape
    h = F.leaky_relu(self.input_conv(mel), self.slope)
    for first, second in self.residual_convs:
        h = h + F.leaky_relu(second(F.leaky_relu(first(h), self.slope)), self.slope)
    kernels = self.kernel_conv(h).view(batch, self.layers, self.out_channels, -1, frames).permute(0, 4, 1, 2, 3)
    biases = self.bias_conv(h).view(batch, self.layers, self.out_channels, frames).permute(0, 3, 1, 2)
    return kernels, biases


def _einsum_lvc(x: torch.Tensor, kernels: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """The location-variable convolution as one 6-D einsum over unfolded windows (no batched matmul layout)."""
    batch, in_channels, samples = x.shape
    frames, out_channels = kernels.shape[1], kernels.shape[2]
    kernel_size = kernels.shape[3] // in_channels
    hop, pad = samples // frames, (kernel_size - 1) // 2
    windows = F.pad(x, (pad, pad)).unfold(2, hop + 2 * pad, hop).unfold(3, kernel_size, 1)  # (B, C_in, L, hop, k)
    out = torch.einsum("bilsk,bloik->bols", windows, kernels.unflatten(3, (in_channels, kernel_size)))
    out = out + biases.transpose(1, 2).unsqueeze(-1)
    return out.reshape(batch, out_channels, samples)


@contextlib.contextmanager
def direct_layout() -> Iterator[None]:
    saved = (KernelPredictor.forward, vocoder_module.location_variable_conv)
    KernelPredictor.forward, vocoder_module.location_variable_conv = _direct_layout_kernels, _einsum_lvc  # type: ignore
    try:
        yield
    finally:
        KernelPredictor.forward, vocoder_module.location_variable_conv = saved  # type: ignore


def with_weight_norm(model: UnivNetVocoder) -> UnivNetVocoder:
    """A copy whose every conv recomputes weight = g * v / ||v|| on each call (same weights)."""
    copy = deepcopy(model)
    for module in copy.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            parametrizations.weight_norm(module)
    return copy.requires_grad_(False)


# timing ------------------------------------------------------------------------------------------------------------
def inference_call(
    model: UnivNetVocoder, mel: torch.Tensor, mode: Callable[[], Any] = torch.inference_mode,
    layout: Callable[[], Any] = contextlib.nullcontext,
) -> Callable[[], torch.Tensor]:
    """One full `inference` (padding, noise from a fixed seed, trimming) under a grad mode and a layout."""

    def run() -> torch.Tensor:
        with mode(), layout():
            return model.inference(mel, generator=torch.Generator().manual_seed(0))

    return run


def speed_entry(runs: Runs, frames: int, config: VocoderConfig) -> dict[str, Any]:
    audio_s = frames * config.hop_length / SAMPLE_RATE
    return {"frames": frames, "audio_seconds": audio_s, "s_per_audio_s": runs.median_s / audio_s, **runs.as_dict()}


def table_row(name: str, entry: dict[str, Any]) -> list[Any]:
    return [name, f"{entry['audio_seconds']:.2f}", entry["frames"], entry["median_s"], entry["s_per_audio_s"],
            " ".join(f"{t:.3f}" for t in entry["times_s"])]


def random_mel(frames: int, config: VocoderConfig, seed: int) -> torch.Tensor:
    """A mel in the diffusion output's range (log-magnitudes around -6)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, config.mel_channels, frames, generator=generator) * MEL_STD + MEL_MEAN


def reference_context() -> dict[str, Any] | None:
    data = load_reference("timings_cpu2.json")
    if not data or "vocoder" not in data.get("original", {}):
        return None
    entry = data["original"]["vocoder"]
    keep = ("threads", "mel_frames", "audio_seconds", "median_s", "times_s", "seconds_per_audio_second", "how")
    return {"path": data["path"], "machine": data.get("machine"), **{k: entry[k] for k in keep if k in entry}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = VocoderConfig.RELEASED
    result: dict[str, Any] = {
        **result_header("vocoder", args, __doc__.split("\n\n")[1]),
        "reference_original": reference_context(),
    }
    start = time.perf_counter()
    model = build_model(args.seed)
    result["setup"] = {"build_s": time.perf_counter() - start, "n_params": sum(p.numel() for p in model.parameters())}

    rows, result["ours"] = [], {}
    for seconds in args.seconds:
        frames = frames_for(seconds, config)
        print(f"ours: {frames} frames ({seconds:g} s of audio) ...", flush=True)
        runs = time_runs(inference_call(model, random_mel(frames, config, args.seed + 1)), args.repeats)
        entry = result["ours"][f"{seconds:g}s"] = speed_entry(runs, frames, config)
        rows.append(table_row("ours", entry))
        write_json_atomic(args.out, result)

    if args.ablations and args.seconds:
        frames = frames_for(args.seconds[0], config)
        mel = random_mel(frames, config, args.seed + 2)
        variants = {
            "ours (inference_mode)": inference_call(model, mel),
            "no_grad": inference_call(model, mel, mode=torch.no_grad),
            "weight_norm_per_call": inference_call(with_weight_norm(model), mel),
            "direct_layout": inference_call(model, mel, layout=direct_layout),
        }
        print(f"ablations, {frames} frames, interleaved: {', '.join(variants)} ...", flush=True)
        reference = variants["ours (inference_mode)"]()
        diffs = {name: (run() - reference).abs().max().item() for name, run in variants.items()}  # also the warm-up
        timings = {name: Runs() for name in variants}
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every variant alike
            for name, run in variants.items():
                timings[name].add(timed(run)[0])
        result["ablations"] = {}
        for name in variants:
            entry = speed_entry(timings[name], frames, config)
            entry["max_abs_diff_vs_ours"] = diffs[name]
            result["ablations"][name] = entry
            rows.append(table_row(name, entry))
        write_json_atomic(args.out, result)

    result["memory"] = {"peak_rss_mb": peak_rss_mb(), "current_rss_mb": current_rss_mb()}
    result["system"]["loadavg_1m_at_end"] = load_average()

    load = load_span(result["system"])
    print(f"\nUnivNet vocoder, full size, CPU fp32, {args.threads} thread(s), median of {args.repeats} after a warm-up "
          f"(1-min load average {load}; {result['system']['cpu_count']} cores)")
    print(format_table(["what", "audio s", "frames", "median s", "s per audio s", "runs (s)"], rows, digits=3))
    reference = result["reference_original"]
    if reference:
        print(f"\noriginal UnivNetGenerator on the reference machine: {reference['seconds_per_audio_second']:.3f} "
              f"s per audio second ({reference['mel_frames']} frames, median {reference['median_s']:.3f} s)")
    print(f"target: <= {TARGET_S_PER_AUDIO_S:.2f} s per audio second")
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
