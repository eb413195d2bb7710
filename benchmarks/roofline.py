"""How close each stage runs to this CPU's limits, and which speed targets the hardware allows at all.

Measures, on this machine and thread count:
- the fp32 GEMM peak (the best of a square 2048 product and the diffusion step's 870 x 3072 x 1024 shape);
- the memory read bandwidth (sum over a 512 MiB tensor);
- the decode-shaped products the autoregressive step is made of (16 rows x the decoder's four weight shapes, oneDNN
  weights packed as the engine runs them): once with one weight re-used (it stays in cache, "hot") and once
  cycling through a decoder's worth of distinct weights so that every call streams its weight from memory.
Counts, with ``torch.utils.flop_counter`` on meta tensors (no weights built), the FLOPs of one guided diffusion step
(batch 2, 100 latents), of scoring 16 candidates x 500 codes with CLVP, and of one decode step for 16 candidates.
Then reads the latest results (``ar_decode.json``, ``diffusion_step.json``, ``clvp_score.json``) and prints, per
stage, the achieved GFLOP/s of ours and of the reference, the floor time if every FLOP ran at the GEMM peak, and the
largest speed-up over the reference that floor allows, next to the target.

Usage: python benchmarks/roofline.py [--threads 2] [--repeats 5] [--results benchmarks/results]
       [--out benchmarks/results/roofline.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import finish, format_table, load_average, result_header, time_runs  # noqa: E402

from tortoise_clvp.config import AutoregressiveConfig, ClvpConfig, DiffusionConfig  # noqa: E402
from tortoise_clvp.models.autoregressive import AutoregressiveModel  # noqa: E402
from tortoise_clvp.models.clvp import ClvpModel  # noqa: E402
from tortoise_clvp.models.diffusion import DiffusionModel, output_frames  # noqa: E402
from tortoise_clvp.models.packed_linear import PackedLinear  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DECODE_ROWS = 16
DECODE_POSITION = 95  # mid-run cache position in ar_decode.py: ~45 prompt positions + 50 of 100 tokens
LATENTS = 100
CLVP_CANDIDATES, CLVP_CODES, CLVP_TEXT_IDS = 16, 500, 40
TARGETS = {"ar_decode_16": "2x transformers", "diffusion_step": "<= 1.5 s", "clvp_score_16x500": "2x transformers"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median quoted)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder with the other benchmarks' JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "roofline.json")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("need --threads >= 1 and --repeats >= 1")
    return args


# machine limits ----------------------------------------------------------------------------------------------------
def gemm_gflops(m: int, k: int, n: int, repeats: int) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    return 2 * m * k * n / time_runs(lambda: a @ b, repeats).median_s / 1e9


def read_bandwidth_gbs(repeats: int, mib: int = 512) -> float:
    data = torch.ones(mib * 2**20 // 4)
    return data.numel() * 4 / time_runs(data.sum, repeats).median_s / 1e9


def decode_products(config: AutoregressiveConfig, repeats: int) -> dict[str, Any]:
    """16-row products against the decoder's weight shapes, packed like the engine packs them: each product repeated
    on one weight (it stays in cache: "hot"), and a decoder's worth of distinct weights in turn ("streamed")."""
    dim = config.model_dim
    shapes = [(3 * dim, dim), (dim, dim), (4 * dim, dim), (dim, 4 * dim)]  # qkv, attention out, mlp in, mlp out
    inputs = [torch.randn(DECODE_ROWS, i) for _, i in shapes]

    def layer() -> list[PackedLinear]:
        return [PackedLinear(torch.nn.Linear(i, o)) for o, i in shapes]

    def run(layers: list[list[PackedLinear]]) -> Callable[[], None]:
        def call() -> None:
            for linears in layers:
                for linear, x in zip(linears, inputs):
                    linear(x)
        return call

    layer_flops = sum(2 * DECODE_ROWS * o * i for o, i in shapes)
    layer_bytes = sum(4 * o * i for o, i in shapes)
    with torch.inference_mode():
        one = layer()
        hot_s = sum(
            time_runs(lambda: [linear(x) for _ in range(config.layers)], repeats).median_s
            for linear, x in zip(one, inputs)
        ) / config.layers
        streamed_s = time_runs(run([layer() for _ in range(config.layers)]), repeats).median_s / config.layers
    return {
        "rows": DECODE_ROWS, "shapes_out_in": shapes, "layer_gflop": layer_flops / 1e9, "layer_weight_mb": layer_bytes / 1e6,
        "hot_ms_per_layer": hot_s * 1e3, "hot_gflops": layer_flops / hot_s / 1e9,
        "streamed_ms_per_layer": streamed_s * 1e3, "streamed_gflops": layer_flops / streamed_s / 1e9,
        "streamed_weight_gbs": layer_bytes / streamed_s / 1e9,
    }


# work per stage ----------------------------------------------------------------------------------------------------
def count_gflop(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def stage_gflop() -> dict[str, float]:
    with torch.device("meta"):
        diffusion = DiffusionModel(DiffusionConfig.RELEASED)
        frames = output_frames(LATENTS)
        x, t = torch.randn(2, DiffusionConfig.RELEASED.in_channels, frames), torch.zeros(2, dtype=torch.long)
        embeddings = torch.randn(2, DiffusionConfig.RELEASED.model_channels, frames)
        clvp = ClvpModel(ClvpConfig.RELEASED)
        codes = torch.randint(0, 8192, (CLVP_CANDIDATES, CLVP_CODES))
        text = torch.randint(0, 255, (1, CLVP_TEXT_IDS))
        decoder = AutoregressiveModel(AutoregressiveConfig.RELEASED)
        decoder.setup_cache(DECODE_ROWS, DECODE_POSITION + 1)
        tokens = torch.zeros(DECODE_ROWS, dtype=torch.long)
        return {
            "diffusion_step": count_gflop(lambda: diffusion(x, t, embeddings)),
            "clvp_score_16x500": count_gflop(lambda: (clvp.text_latents(text), clvp.speech_latents(codes))),
            "ar_decode_step_16": count_gflop(lambda: decoder.decode_step(tokens, 2, DECODE_POSITION)),
        }


# measured times from the other benchmarks --------------------------------------------------------------------------
def _load(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def measured_times(folder: Path) -> dict[str, dict[str, Any]]:
    """{stage: {ours_s, reference_s, reference, source}} for whichever results exist."""
    found: dict[str, dict[str, Any]] = {}
    ar = _load(folder, "ar_decode.json")
    for entry in (ar or {}).get("fp32", []):
        if entry.get("candidates") == DECODE_ROWS:
            found["ar_decode_16"] = {"ours_s": entry["ours"]["median_s"], "reference_s": entry["hf"]["median_s"],
                                     "reference": "transformers", "tokens": entry["tokens"], "source": "ar_decode.json"}
    step = _load(folder, "diffusion_step.json")
    if step and "ours" in step:
        found["diffusion_step"] = {"ours_s": step["ours"]["batch2"]["median_s"],
                                   "reference_s": step["reference_original"]["batch2_median_s"],
                                   "reference": "original, batched", "source": "diffusion_step.json"}
    clvp = _load(folder, "clvp_score.json")
    for cell in (clvp or {}).get("cells", []):
        if cell.get("candidates") == CLVP_CANDIDATES and cell.get("length") == CLVP_CODES and "hf" in cell:
            found["clvp_score_16x500"] = {"ours_s": cell["ours"]["median_s"], "reference_s": cell["hf"]["median_s"],
                                          "reference": "transformers", "source": "clvp_score.json"}
    return found


def stage_rows(
    gflop: dict[str, float], times: dict[str, dict[str, Any]], peak: float, decode_rate: float
) -> list[dict[str, Any]]:
    """One row per target. The decode row's work is one step's FLOPs times the tokens (prefill and sampling left
    out); its second floor uses the streamed 16-row product rate, what decode-shaped GEMMs reach here."""
    rows = []
    for stage, target in TARGETS.items():
        work = gflop["ar_decode_step_16"] * times.get(stage, {}).get("tokens", 0) if stage == "ar_decode_16" \
            else gflop[stage]
        row: dict[str, Any] = {"stage": stage, "gflop": work, "target": target, "floor_s_at_peak": work / peak}
        if stage in times and work:
            t = times[stage]
            row.update(t)
            row.update({
                "ours_gflops": work / t["ours_s"], "ours_fraction_of_peak": work / t["ours_s"] / peak,
                "reference_gflops": work / t["reference_s"], "speedup_measured": t["reference_s"] / t["ours_s"],
                "speedup_bound_at_peak": t["reference_s"] / (work / peak),
            })
            if stage == "ar_decode_16":
                row["floor_s_at_decode_rate"] = work / decode_rate
                row["speedup_bound_at_decode_rate"] = t["reference_s"] / (work / decode_rate)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = result_header("roofline", args, __doc__.split("\n\n")[1])
    print("measuring the GEMM peak and the memory bandwidth ...", flush=True)
    gemm = {"2048x2048x2048": gemm_gflops(2048, 2048, 2048, args.repeats),
            "870x3072x1024": gemm_gflops(870, 3072, 1024, args.repeats)}
    peak = max(gemm.values())
    bandwidth = read_bandwidth_gbs(args.repeats)
    print("measuring 16-row decode products (hot, then streamed from memory) ...", flush=True)
    decode = decode_products(AutoregressiveConfig.RELEASED, args.repeats)
    gflop = stage_gflop()
    rows = stage_rows(gflop, measured_times(args.results), peak, decode["streamed_gflops"])
    result.update({"gemm_gflops": gemm, "peak_gflops": peak, "read_bandwidth_gbs": bandwidth, "decode_products": decode,
                   "stage_gflop": gflop, "stages": rows})
    result["system"]["loadavg_1m_at_end"] = load_average()

    print(f"\nThis CPU, {args.threads} thread(s), fp32, median of {args.repeats}:")
    print(format_table(["limit", "value"], [
        *[[f"GEMM {shape} GFLOP/s", value] for shape, value in gemm.items()],
        ["memory read GB/s", bandwidth],
        [f"{DECODE_ROWS}-row decode products, weight hot: GFLOP/s", decode["hot_gflops"]],
        [f"{DECODE_ROWS}-row decode products, weight streamed: GFLOP/s", decode["streamed_gflops"]],
        ["  ms per decoder layer (hot / streamed)",
         f"{decode['hot_ms_per_layer']:.2f} / {decode['streamed_ms_per_layer']:.2f}"],
    ], digits=1))
    print(f"\nPer stage (floor = every FLOP at the {peak:.0f} GFLOP/s GEMM peak):")
    print(format_table(
        ["stage", "GFLOP", "ours s", "ours GFLOP/s", "% of peak", "reference", "ref s", "ref GFLOP/s",
         "floor s", "measured x", "bound x", "target"],
        [[r["stage"], r["gflop"], r.get("ours_s"), r.get("ours_gflops"),
          None if "ours_fraction_of_peak" not in r else 100 * r["ours_fraction_of_peak"], r.get("reference"),
          r.get("reference_s"), r.get("reference_gflops"), r["floor_s_at_peak"], r.get("speedup_measured"),
          r.get("speedup_bound_at_peak"), r["target"]] for r in rows],
    ))
    for r in rows:
        if "speedup_bound_at_decode_rate" in r:
            print(f"{r['stage']}: at the streamed {DECODE_ROWS}-row product rate the floor is "
                  f"{r['floor_s_at_decode_rate']:.2f} s, a bound of {r['speedup_bound_at_decode_rate']:.2f}x")
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
