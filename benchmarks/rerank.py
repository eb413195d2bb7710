"""CLVP reranking benchmark: a JSONL manifest of texts and voices -> candidates sampled and scored by CLVP -> a report.

For each text and seed, max(--candidates) candidates are sampled once and smaller N are their prefixes; the report
(report.json, report.md, PNG plots when matplotlib is installed) gives per-text scores, ranks, margins and the
chosen candidate, CLAP-style text <-> speech retrieval metrics over the set, top-1 stability as N grows and across
seeds, and sampling / scoring throughput. See `tortoise_clvp/rerank_bench.py` for the manifest format and the
exact definitions. The numbers mean only what the weights mean: random models run but measure nothing.

Usage: python benchmarks/rerank.py [--models-dir DIR] [MANIFEST] [--out benchmarks/results/rerank]
       [--candidates 4,16] [--seeds 0,1] [--device cpu] [--threads 2] [--clvp-batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import load_average, peak_rss_mb, system_info  # noqa: E402

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.bench.rerank_report import run_rerank_benchmark
from tortoise_clvp.errors import TortoiseClvpError

HERE = Path(__file__).resolve().parent
DEFAULT_MANIFEST = HERE / "manifests" / "example.jsonl"
DEFAULT_OUT = HERE / "results" / "rerank"
MODELS_ENV = "TORTOISE_MODELS_DIR"


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", nargs="?", default=str(DEFAULT_MANIFEST), help="JSONL manifest (text, voice, options)")
    parser.add_argument("--models-dir", default=os.environ.get(MODELS_ENV), help=f"model directory (default ${MODELS_ENV})")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for report.json, report.md and plots")
    parser.add_argument("--candidates", type=_ints, default=[4, 16], help="candidate counts N, e.g. 4,16,64")
    parser.add_argument("--seeds", type=_ints, default=[0, 1], help="sampling seeds, e.g. 0,1,2")
    parser.add_argument("--clvp-batch-size", type=int, default=16, help="candidates CLVP scores at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if not args.models_dir:
        parser.error(f"no model directory: pass --models-dir DIR or set {MODELS_ENV}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    try:
        tts = TextToSpeech.from_local(args.models_dir, device=args.device)
        report = run_rerank_benchmark(
            tts, args.manifest, args.out, candidates=args.candidates, seeds=args.seeds, progress=progress,
            clvp_batch_size=args.clvp_batch_size,
            metadata={**system_info(args.device), "models_dir": str(args.models_dir), "load_average": load_average()},
        )
    except TortoiseClvpError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.markdown)
    print(f"wrote {report.json_path}, {report.markdown_path}"
          + "".join(f", {p}" for p in report.plot_paths) + f" (peak RSS {peak_rss_mb():.0f} MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
