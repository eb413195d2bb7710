"""Figures and README tables from whatever benchmark results exist in ``benchmarks/results/``.

Reads ``ar_decode.json``, ``clvp_score.json``, ``vocoder.json``, ``diffusion_step.json``, ``diffusion_samplers.json``,
``end_to_end.json``, ``compile_cpu.json`` and ``roofline.json`` (each written by the script of the same name; any may
be missing or from an unfinished run) and draws, with matplotlib (``pip install 'tortoise-clvp[bench]'``):
- ``end_to_end_stages.png``: wall time per pipeline stage for each preset (stacked bars, median run);
- ``ar_decode_tokens_per_s.png``: speech tokens per second against the candidate count, ours vs transformers;
- ``diffusion_sampler_error.png``: sampler error (log-mel RMSE) against the step count;
- ``clvp_score.png``: CLVP scoring seconds per (candidates x codes) cell, ours vs transformers vs the original.
Each PNG and the README are written atomically (`tortoise_clvp.atomic`), so a reader never sees half a file.

``--readme`` renders the results as Markdown tables and rewrites the part of ``benchmarks/README.md`` between
``<!-- results:start -->`` and ``<!-- results:end -->`` (also atomically); ``--no-plots`` skips the figures.

Usage: python benchmarks/plots.py [--results benchmarks/results] [--readme] [--no-plots] [--readme-path PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

from tortoise_clvp.atomic import atomic_write, write_bytes_atomic
from tortoise_clvp.bench.rerank_report import markdown_cell, markdown_table

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE / "README.md"
START_MARK, END_MARK = "<!-- results:start -->", "<!-- results:end -->"
BENCHMARKS = ("end_to_end", "ar_decode", "clvp_score", "diffusion_step", "diffusion_samplers", "vocoder",
              "compile_cpu", "roofline")
STAGES = ("conditioning", "sampling", "reranking", "latents", "diffusion", "vocoder")
INSTALL_HINT = "matplotlib is needed for the figures: pip install 'tortoise-clvp[bench]' (or pip install matplotlib)"


# loading -------------------------------------------------------------------------------------------------------------
def load_results(folder: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """{benchmark name: its JSON} for every results file present and readable; the others are skipped with a note."""
    results: dict[str, dict[str, Any]] = {}
    for name in BENCHMARKS:
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"skipping {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if isinstance(data, dict):
            results[name] = data
    return results


def _finished(data: dict[str, Any]) -> bool:
    return data.get("status") in ("done", "complete")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# figures -------------------------------------------------------------------------------------------------------------
def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    return Figure


def save_figure(fig: Any, path: Path) -> Path:
    """Write `fig` as PNG atomically (folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:
        fig.savefig(stream, format="png", dpi=120, bbox_inches="tight")
    return path


def _median_run(entry: dict[str, Any]) -> dict[str, Any] | None:
    runs = sorted(entry.get("runs") or [], key=lambda r: r.get("wall_s", 0.0))
    return runs[len(runs) // 2] if runs else None


def plot_end_to_end(data: dict[str, Any], Figure: Any) -> Any | None:
    """(a) seconds per stage per preset, stacked, from the median-wall run of each preset."""
    presets = {name: run for name, entry in (data.get("presets") or {}).items() if (run := _median_run(entry))}
    if not presets:
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    names = list(presets)
    bottoms = [0.0] * len(names)
    parts = [*STAGES, "unattributed"]
    for part in parts:
        heights = [max(0.0, presets[n]["stages_s"].get(part, 0.0) if part in STAGES
                       else presets[n].get("unattributed_s", 0.0)) for n in names]
        if not any(heights):
            continue
        ax.bar(names, heights, bottom=bottoms, label=part)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for x, name in enumerate(names):
        run = presets[name]
        ax.annotate(f"{run['wall_s']:.0f} s, RTF {run.get('real_time_factor', 0):.1f}", (x, bottoms[x]),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    tokens = (data.get("args") or {}).get("tokens")
    ax.set_ylabel("wall seconds")
    ax.set_title(f"End to end per stage (CPU, random weights, {tokens} forced tokens per candidate)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(0, max(bottoms) * 1.12)
    return fig


def plot_ar_decode(data: dict[str, Any], Figure: Any) -> Any | None:
    """(b) tokens/s against the candidate count: ours (packed fp32), transformers, ours bf16 if measured."""
    rows = sorted(data.get("fp32") or [], key=lambda r: r["candidates"])
    if not rows:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    counts = [r["candidates"] for r in rows]
    ax.plot(counts, [r["ours"]["tokens_per_s"] for r in rows], "o-", label="ours (fp32)")
    ax.plot(counts, [r["hf"]["tokens_per_s"] for r in rows], "s--", label="transformers generate (fp32)")
    bf16 = sorted(((data.get("bf16") or {}).get("timings") or []), key=lambda r: r["candidates"])
    if bf16:
        ax.plot([r["candidates"] for r in bf16], [r["ours_bf16"]["tokens_per_s"] for r in bf16], "^:",
                label="ours (bf16)")
    for r in rows:
        ax.annotate(f"{r['speedup']:.2f}x", (r["candidates"], r["ours"]["tokens_per_s"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("candidates (one batch)")
    ax.set_ylabel("speech tokens per second")
    tokens = rows[0].get("tokens")
    note = "" if _finished(data) else " [unfinished run]"
    ax.set_title(f"Autoregressive decoding, {tokens} forced tokens, CPU, same random weights{note}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


_SAMPLER_STYLE = {"dpm++2m": ("DPM-Solver++(2M)", "o-"), "ddim": ("DDIM", "s-"), "p": ("p (ancestral)", "^-")}


def plot_samplers(data: dict[str, Any], Figure: Any) -> Any | None:
    """(c) RMSE against steps, one panel per denoiser and guidance mode: vs the p@200 runs (solid) and each ODE
    sampler's discretisation error vs its own 400-step answer (dotted); the p@200 seed-to-seed spread dashed."""
    panels = [(name, mode, m) for name, entry in (data.get("denoisers") or {}).items()
              for mode, m in (entry.get("modes") or {}).items() if m.get("runs")]
    if not panels:
        return None
    fig = Figure(figsize=(5.2 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    from matplotlib.ticker import NullFormatter

    ode_tol = (data.get("args") or {}).get("ode_tol")
    for ax, (name, mode, m) in zip(axes, panels):
        runs = [r for r in m["runs"] if not r.get("reference")]
        ticks = sorted({r["steps"] for r in runs})
        for sampler, (label, style) in _SAMPLER_STYLE.items():
            mine = sorted((r for r in runs if r["sampler"] == sampler), key=lambda r: r["steps"])
            if not mine:
                continue
            steps = [r["steps"] for r in mine]
            line = ax.plot(steps, [r["vs_p@200"]["rmse"] for r in mine], style, label=f"{label} vs p@200")[0]
            own = {"dpm++2m": "vs_dpm@400", "ddim": "vs_ddim@400"}.get(sampler)
            if own:
                ax.plot(steps, [r[own]["rmse"] for r in mine], style[0] + ":", color=line.get_color(),
                        label=f"{label} vs its 400-step answer")
        floor = ((m.get("noise_floor") or {}).get("p@200_seed_spread") or {}).get("rmse")
        if floor:
            ax.axhline(floor, color="grey", ls="--", lw=1, label="p@200 seed-to-seed spread")
        if ode_tol:
            ax.axhline(ode_tol, color="grey", ls=":", lw=1, label=f"ODE tolerance {ode_tol}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("steps")
        ax.set_ylabel("log-mel RMSE (natural-log units)")
        ax.set_title(f"{name}, {mode}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    fig.suptitle("Diffusion sampler error vs steps (one fixed initial noise)", fontsize=11)
    return fig


def plot_clvp(data: dict[str, Any], Figure: Any) -> Any | None:
    """Seconds per CLVP scoring cell: ours packed / plain, transformers, and the original's reference figure."""
    cells = data.get("cells") or []
    if not cells:
        return None
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    labels = [f"{c['candidates']} x {c['length']}" for c in cells]
    series = [("ours (packed)", [c["ours_packed"]["median_s"] for c in cells]),
              ("ours (plain)", [c["ours"]["median_s"] for c in cells]),
              ("transformers", [c["hf"]["median_s"] for c in cells]),
              ("original (reference machine)", [c.get("original_median_s") or 0.0 for c in cells])]
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(cells))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(cells)), labels)
    ax.set_xlabel("candidates x speech codes")
    ax.set_ylabel("seconds (median)")
    ax.set_title("CLVP scoring, CPU fp32, same random weights", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


PLOTS: dict[str, tuple[str, Callable[[dict[str, Any], Any], Any | None]]] = {
    "end_to_end": ("end_to_end_stages.png", plot_end_to_end),
    "ar_decode": ("ar_decode_tokens_per_s.png", plot_ar_decode),
    "diffusion_samplers": ("diffusion_sampler_error.png", plot_samplers),
    "clvp_score": ("clvp_score.png", plot_clvp),
}


def write_plots(results: dict[str, dict[str, Any]], folder: Path) -> list[Path]:
    Figure = _figure_class()
    written = []
    for name, (filename, draw) in PLOTS.items():
        if name not in results:
            print(f"no {name}.json: skipping {filename}")
            continue
        try:
            fig = draw(results[name], Figure)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a schema this script does not know
            print(f"cannot plot {name}.json ({type(exc).__name__}: {exc}): skipping {filename}", file=sys.stderr)
            continue
        if fig is None:
            print(f"{name}.json holds nothing to plot yet: skipping {filename}")
            continue
        written.append(save_figure(fig, folder / filename))
        print(f"wrote {written[-1]}")
    return written


# Markdown ------------------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    """The rerank report's cell formatter, with this page's 2-digit default."""
    return markdown_cell(value, digits)


def md_table(headers: list[str], rows: list[list[Any]], digits: int = 2) -> str:
    """The rerank report's table renderer, with this page's 2-digit default."""
    return markdown_table(headers, rows, digits)


def _provenance(data: dict[str, Any]) -> str:
    system = data.get("system") or {}
    load = "/".join(_fmt(system.get(k)) for k in ("loadavg_1m_at_start", "loadavg_1m_at_end") if k in system)
    parts = [f"run {data.get('started', '?')}", f"status `{data.get('status', '?')}`"]
    if load:
        parts.append(f"1-min load at start/end {load}")
    if system.get("git_commit"):
        parts.append(f"commit `{str(system['git_commit'])[:10]}`")
    note = "" if _finished(data) else " **Unfinished run: partial numbers.**"
    return "_" + "; ".join(parts) + "._" + note


def md_end_to_end(data: dict[str, Any]) -> str:
    rows = []
    for name, entry in (data.get("presets") or {}).items():
        run = _median_run(entry)
        if not run:
            continue
        o = entry.get("options") or {}
        sampler = f"{o.get('sampler')}@{o.get('diffusion_steps')}" + (" cf" if o.get("cond_free") else "")
        rows.append([name, o.get("num_candidates"), sampler, run["wall_s"],
                     *(run["stages_s"].get(s, 0.0) for s in STAGES), run.get("unattributed_s"),
                     run.get("audio_seconds"), run.get("real_time_factor"),
                     run.get("peak_rss_mb_during_call") or run.get("peak_rss_mb_process"),
                     "/".join(_fmt(v) for v in run.get("loadavg_1m") or [])])
    if not rows:
        return "No completed preset yet."
    tokens = (data.get("args") or {}).get("tokens")
    return (f"Median-wall run per preset, {tokens} forced tokens per candidate; seconds. cf = conditioning-free "
            "guidance; RTF = wall / audio seconds.\n\n"
            + md_table(["preset", "cands", "sampler", "total s", *STAGES, "unattr.", "audio s", "RTF",
                        "peak RSS MiB", "load"], rows, digits=1))


def md_ar_decode(data: dict[str, Any]) -> str:
    rows = [[r["candidates"], r["tokens"], r["ours"]["median_s"], r["hf"]["median_s"], r["ours"]["tokens_per_s"],
             r["hf"]["tokens_per_s"], f"{r['speedup']:.2f}x", r.get("loadavg_1m")]
            for r in sorted(data.get("fp32") or [], key=lambda r: r["candidates"])]
    if not rows:
        return "No completed cell yet."
    text = ("Ours (`sample_candidates`, packed linears) vs transformers' `ClvpForCausalLM.generate`, same weights, "
            "fp32, runs interleaved; median seconds.\n\n"
            + md_table(["candidates", "tokens", "ours s", "HF s", "ours tok/s", "HF tok/s", "speed-up", "load 1m"],
                       rows))
    bf16 = (data.get("bf16") or {}).get("timings") or []
    if bf16:
        text += "\n\nOurs in bfloat16:\n\n" + md_table(
            ["candidates", "fp32 s", "bf16 s", "bf16 tok/s", "bf16 vs fp32"],
            [[r["candidates"], r["ours_fp32_median_s"], r["ours_bf16"]["median_s"], r["ours_bf16"]["tokens_per_s"],
              f"{r['speedup_vs_fp32']:.2f}x"] for r in bf16])
        acc = ((data.get("bf16") or {}).get("accuracy") or {}).get("sequence")
        if acc:
            text += (f"\n\nbf16 vs fp32 logits (teacher-forced): max |d| {acc['max_abs']:.3g}, "
                     f"top-1 agreement {100 * acc['top1_agreement']:.1f} %.")
    return text


def md_clvp_score(data: dict[str, Any]) -> str:
    cells = data.get("cells") or []
    if not cells:
        return "No completed cell yet."
    rows = [[f"{c['candidates']} x {c['length']}", c["ours_packed"]["median_s"], c["ours"]["median_s"],
             c["hf"]["median_s"], c.get("original_median_s"), c["ours_packed"]["candidates_per_s"],
             c["hf"]["candidates_per_s"], f"{c['speedup_vs_hf']['ours_packed']:.2f}x",
             f"{c['speedup_vs_hf']['ours']:.2f}x", c["ours_packed"].get("peak_rss_delta_mb"),
             c["hf"].get("peak_rss_delta_mb"), c.get("loadavg_1m_before"),
             max((x for n in ("ours_packed", "ours", "hf") for x in c[n].get("other_cores_busy") or [] if x is not None),
                 default=None)] for c in cells]
    text = ("One 40-id text against N candidates of L codes, batches of "
            f"{(data.get('args') or {}).get('batch_size', 16)}; median seconds; ours packed = with oneDNN-packed "
            "linears (measured only: `TextToSpeech.from_local` packs the decoder and leaves CLVP plain, the faster here); "
            "original = the original Tortoise on the reference "
            "machine (another time: context only); +MiB = peak RSS growth during a call; load 1m = before the cell; "
            "others = the most cores other processes kept busy during any timed call of the cell.\n\n"
            + md_table(["N x L", "packed s", "plain s", "HF s", "original s", "packed cand/s", "HF cand/s",
                        "packed/HF", "plain/HF", "packed +MiB", "HF +MiB", "load 1m", "others"], rows, digits=2))
    errors = [c["scores_vs_hf"][n]["max_abs"] for c in cells for n in ("ours", "ours_packed")]
    set_aside = sum(len((c.get("rounds") or {}).get("set_aside") or []) for c in cells)
    noisy = sum((c.get("rounds") or {}).get("noisy_used", 0) for c in cells)
    if set_aside:
        text += (f"\n\n{set_aside} round(s) disturbed by other processes were set aside and redone"
                 + (f"; {noisy} of them had to be used: those cells are noisy." if noisy else "."))
    target = data.get("target") or {}
    text += (f"\n\nScores vs transformers: max |diff| {max(errors):.2g} (HF's RMSNorm eps differs); target "
             f"{target.get('speedup_vs_hf', 2):.0f}x HF at 16 candidates: "
             f"{'met' if target.get('met') else 'not met' if 'met' in target else 'n/a'}.")
    return text


def md_diffusion_step(data: dict[str, Any]) -> str:
    ours = data.get("ours") or {}
    if not ours:
        return "No result yet."
    ref = data.get("reference_original") or {}
    rows = [[label, (ours.get(key) or {}).get("median_s"), (ours.get(key) or {}).get("min_s")]
            for label, key in (("two batch-1 forwards (the original's way)", "two_batch1"),
                               ("one conditioned batch-1 forward (unguided step)", "cond_batch1"),
                               ("one batch-2 forward (ours)", "batch2"),
                               ("timestep_independent (once per generation)", "timestep_independent"))]
    rows += [["original: two batch-1 forwards (reference machine)", ref.get("median_s"), None],
             ["original: one batch-2 forward (reference machine)", ref.get("batch2_median_s"), None]]
    setup = data.get("setup") or {}
    return (f"One guided diffusion step, {setup.get('latents')} latents -> {setup.get('frames')} frames; seconds.\n\n"
            + md_table(["what", "median s", "min s"], rows, digits=3)
            + f"\n\nTarget <= {ours.get('target_s')} s per guided step: "
              f"{'met' if ours.get('meets_target') else 'not met'}.")


def md_diffusion_samplers(data: dict[str, Any]) -> str:
    rows = []
    for name, entry in (data.get("denoisers") or {}).items():
        for mode, m in (entry.get("modes") or {}).items():
            c = m.get("choice") or {}
            floor = ((m.get("noise_floor") or {}).get("p@200_seed_spread") or {}).get("rmse")
            rows.append([name, mode, floor, c.get("dpm_steps_by_p_spread"), c.get("rmse_vs_p@200"),
                         c.get("informative"), c.get("dpm_steps_by_ode_tol"), c.get("ddim_steps_by_ode_tol")])
    if not rows:
        return "No result yet."
    tol = (data.get("args") or {}).get("ode_tol")
    text = ("Log-mel RMSE in natural-log units (1 = 8.7 dB). p@200 spread = the ancestral sampler's own seed-to-seed "
            f"RMSE (the noise floor); ODE tol = discretisation error vs the 400-step answer <= {tol}.\n\n"
            + md_table(["denoiser", "guidance", "p@200 spread", "DPM steps (p spread)", "its RMSE vs p@200",
                        "informative", "DPM steps (ODE tol)", "DDIM steps (ODE tol)"], rows, digits=4))
    for mode, sweep in (data.get("oracle_sweep") or {}).items():
        text += f"\n\nOracle sweep ({mode}): smallest DPM step count with worst-case error <= {tol}: " \
                f"{sweep.get('dpm_steps_by_ode_tol')}."
    presets = ((data.get("speedup") or {}).get("current_presets")) or {}
    if presets:
        text += "\n\nPresets now: " + ", ".join(
            f"{k} {v['sampler']}@{v['steps']}{'' if v.get('cond_free') else ' unguided'}" for k, v in presets.items()
        ) + "."
    return text


def md_vocoder(data: dict[str, Any]) -> str:
    rows = [[f"ours, {key} of audio", e.get("frames"), e.get("median_s"), e.get("s_per_audio_s")]
            for key, e in (data.get("ours") or {}).items()]
    rows += [[f"ablation: {name}", e.get("frames"), e.get("median_s"), e.get("s_per_audio_s")]
             for name, e in (data.get("ablations") or {}).items()]
    ref = data.get("reference_original") or {}
    if ref:
        rows.append(["original (reference machine)", ref.get("mel_frames"), ref.get("median_s"),
                     ref.get("seconds_per_audio_second")])
    if not rows:
        return "No result yet."
    return ("UnivNet, full size; seconds of compute per second of 24 kHz audio (target <= 0.10).\n\n"
            + md_table(["what", "mel frames", "median s", "s per audio s"], rows, digits=3))


def md_compile_cpu(data: dict[str, Any]) -> str:
    rows = [[stage, name, e.get("median_step_s", 0) * 1e3, e.get("first_call_s")]
            for stage, key in (("decoder step", "decoder"), ("denoiser step", "denoiser"))
            for name, e in (data.get(key) or {}).items() if isinstance(e, dict)]
    if not rows:
        return "No result yet."
    args = data.get("args") or {}
    return (f"`compile=True` on CPU fp32: decoder step with {args.get('rows')} rows (oneDNN-packed eager vs compiled), "
            "one guided denoiser step (eager vs compiled). The first call of a compiled variant includes the compile.\n\n"
            + md_table(["what", "variant", "median ms per step", "first call s"], rows, digits=1)
            + f"\n\nCompiled / packed decoder step: {_fmt((data.get('decoder') or {}).get('compiled_over_packed'))}x "
              f"the time; compiled / eager denoiser: {_fmt((data.get('denoiser') or {}).get('compiled_over_eager'))}x. "
              "So on CPU float32 `compile=True` compiles the denoiser only and keeps the packed eager decoder.")


def md_roofline(data: dict[str, Any]) -> str:
    decode = data.get("decode_products") or {}
    limits = [[f"GEMM {shape}, GFLOP/s", value] for shape, value in (data.get("gemm_gflops") or {}).items()]
    limits += [["memory read, GB/s", data.get("read_bandwidth_gbs")],
               ["16-row decode products, weight in cache, GFLOP/s", decode.get("hot_gflops")],
               ["16-row decode products, weight streamed, GFLOP/s", decode.get("streamed_gflops")]]
    rows = [[r["stage"], r["gflop"], r.get("ours_s"), r.get("ours_gflops"),
             None if "ours_fraction_of_peak" not in r else 100 * r["ours_fraction_of_peak"], r.get("reference"),
             r.get("reference_s"), r.get("reference_gflops"), r["floor_s_at_peak"], r.get("speedup_measured"),
             r.get("speedup_bound_at_peak"), r.get("speedup_bound_at_decode_rate"), r["target"]]
            for r in data.get("stages") or []]
    if not rows:
        return "No result yet."
    return ("This CPU's limits, then each stage's work against them (GFLOP counted by `torch.utils.flop_counter`; "
            "floor = every FLOP at the GEMM peak; bound = reference time / floor, the largest speed-up the hardware "
            "allows at the same math; for decoding also the bound at the streamed 16-row product rate).\n\n"
            + md_table(["limit", "value"], limits, digits=1) + "\n\n"
            + md_table(["stage", "GFLOP", "ours s", "ours GFLOP/s", "% of peak", "reference", "ref s",
                        "ref GFLOP/s", "floor s", "measured x", "bound x (peak)", "bound x (16-row rate)", "target"],
                       rows))


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "end_to_end": ("End to end (`end_to_end.py`)", md_end_to_end),
    "ar_decode": ("Autoregressive decoding (`ar_decode.py`)", md_ar_decode),
    "clvp_score": ("CLVP scoring (`clvp_score.py`)", md_clvp_score),
    "diffusion_step": ("One diffusion step (`diffusion_step.py`)", md_diffusion_step),
    "diffusion_samplers": ("Diffusion sampler error (`diffusion_samplers.py`)", md_diffusion_samplers),
    "vocoder": ("Vocoder (`vocoder.py`)", md_vocoder),
    "compile_cpu": ("torch.compile on CPU (`compile_cpu.py`)", md_compile_cpu),
    "roofline": ("Limits of this CPU (`roofline.py`)", md_roofline),
}


def render_markdown(
    results: dict[str, dict[str, Any]], figures_dir: Path | None = None, readme_dir: Path = HERE
) -> str:
    """The 'Latest results' body: the machine, then one section per results file present."""
    if not results:
        return "_No results yet: run the benchmarks above._"
    system = next((d["system"] for d in results.values() if isinstance(d.get("system"), dict)), {})
    lines = [
        f"Machine: {system.get('cpu', '?')}, {system.get('cpu_count', '?')} logical CPUs, torch "
        f"{system.get('torch', '?')} with {system.get('torch_threads', '?')} threads, Python "
        f"{system.get('python', '?')}. All models have **random weights at the released sizes**: these numbers "
        "measure speed (and sampler agreement), not speech quality.",
        "",
        "Present: " + ", ".join(f"`{name}.json`" for name in BENCHMARKS if name in results)
        + (". Missing: " + ", ".join(f"`{n}.json`" for n in BENCHMARKS if n not in results)
           if any(n not in results for n in BENCHMARKS) else "") + ".",
    ]
    for name in BENCHMARKS:
        if name not in results:
            continue
        title, render = SECTIONS[name]
        data = results[name]
        try:
            body = render(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            body = f"(cannot render this file: {type(exc).__name__}: {exc})"
        lines += ["", f"### {title}", "", _provenance(data), "", body]
        png = PLOTS.get(name, (None,))[0]
        if png and figures_dir is not None and (figures_dir / png).is_file():
            link = Path(os.path.relpath(figures_dir / png, readme_dir)).as_posix()
            lines += ["", f"![{name}]({link})"]
    return "\n".join(lines)


def update_readme(readme: Path, body: str) -> Path:
    """Replace the text between the results markers (appending a 'Latest results' section if there are none)."""
    text = readme.read_text() if readme.is_file() else "# Benchmarks\n"
    block = f"{START_MARK}\n{body.rstrip()}\n{END_MARK}"
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(END_MARK):]
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
    write_bytes_atomic(readme, text.encode())
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the results JSON files")
    parser.add_argument("--readme", action="store_true", help="rewrite the results section of benchmarks/README.md")
    parser.add_argument("--readme-path", type=Path, default=README)
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="draw the PNGs")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    print("results found: " + (", ".join(f"{n}.json" for n in results) or "none") + f" (in {args.results})")
    if args.plots:
        write_plots(results, args.results)
    if args.readme:
        path = update_readme(args.readme_path, render_markdown(results, args.results, args.readme_path.resolve().parent))
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
