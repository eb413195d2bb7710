"""Speech-token decoding speed: our sampler against transformers' ``ClvpForCausalLM.generate``, same weights.

Both sides get one random full-size Tortoise decoder (transformers' ``ClvpConfig`` defaults: 30 layers, 1024 wide,
16 heads), the same ~40-id text and the same conditioning, and must emit exactly ``--tokens`` new tokens per candidate
(min = max new tokens, so the stop token is banned and nothing stops early). Sampling is Tortoise's: temperature 0.8,
top-p 0.8, repetition penalty 2.0, no top-k (transformers would otherwise add top_k=50 on its own). Each
implementation gets a short warm-up per candidate count, then ours and theirs interleave (A B, B A) for ``--repeats`` runs; the
clock (``time.perf_counter``, with a device synchronise) wraps the whole sampling call. The conditioning is computed
once outside the clock for both.

``--dtype-check`` (on by default) then casts our model to bfloat16, times it the same way and measures how far its
logits drift from fp32 on a fixed, teacher-forced token sequence (prefill, then one ``decode_step`` per token).

Usage: python benchmarks/ar_decode.py [--tokens 100] [--candidates 1,4,16] [--repeats 3] [--threads 2]
       [--device cpu] [--no-dtype-check] [--out benchmarks/results/ar_decode.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere
from common import (  # noqa: E402
    Runs,
    cuda_peak_mb,
    current_rss_mb,
    finish,
    format_table,
    load_average,
    load_reference,
    peak_rss_mb,
    synchronize,
    system_info,
    timed,
    write_json_atomic,
)

from tortoise_clvp.config import TOKENS
from tortoise_clvp.models.autoregressive import AutoregressiveModel
from tortoise_clvp.models.packed_linear import pack_linears
from tortoise_clvp.pipeline.decoding import DecodingOptions, sample_candidates
from tortoise_clvp.pipeline.sampling import SamplingOptions
from tortoise_clvp.weights.hf_autoregressive import load_autoregressive_hf

SAMPLING = SamplingOptions(temperature=0.8, top_p=0.8, top_k=None, repetition_penalty=2.0)
TEXT_IDS = 39  # + the appended 0 = 40 ids, as the reference's 61-character text
COND_FRAMES = 517  # mel frames of a 132300-sample (6 s) conditioning clip
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ar_decode.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100, help="new tokens per candidate, forced (min = max)")
    parser.add_argument("--candidates", default="1,4,16", help="comma-separated candidate counts (one batch each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per implementation and candidate count")
    parser.add_argument("--warmup-tokens", type=int, default=4, help="tokens in each untimed warm-up run")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype-check", action=argparse.BooleanOptionalAction, default=True,
        help="also time our model in bfloat16 and compare its logits with fp32 (default: on)",
    )
    parser.add_argument("--check-tokens", type=int, default=32, help="teacher-forced steps in the bf16 logit check")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    args.candidate_counts = [int(c) for c in args.candidates.split(",") if c.strip()]
    if not args.candidate_counts or min(args.candidate_counts) < 1 or args.tokens < 1 or args.repeats < 1:
        parser.error("need --tokens >= 1, --repeats >= 1 and candidate counts >= 1")
    return args


# models and inputs -------------------------------------------------------------------------------------------------
def build_models(seed: int, device: torch.device) -> tuple[Any, Any, AutoregressiveModel, dict[str, Any]]:
    """transformers' full-size CLVP model under `seed` -> (its conditioning encoder, its decoder, ours, info).

    The CLVP text/speech encoders are built (random init needs the whole model) and dropped right away.
    """
    import transformers

    config = transformers.ClvpConfig(decoder_config=dict(vocab_size=8194), speech_config=dict(vocab_size=8192))
    start = time.perf_counter()
    torch.manual_seed(seed)
    full = transformers.ClvpModelForConditionalGeneration(config).eval()
    hf_build_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = load_autoregressive_hf(full.state_dict(), config.to_dict())
    ours_build_s = time.perf_counter() - start
    cond_encoder, decoder = full.conditioning_encoder, full.speech_decoder_model
    del full
    gc.collect()
    cond_encoder, decoder, ours = cond_encoder.to(device).eval(), decoder.to(device).eval(), ours.to(device).eval()
    info = {
        "transformers": transformers.__version__,
        "hf_config": "ClvpConfig(decoder_config=dict(vocab_size=8194), speech_config=dict(vocab_size=8192))",
        "hf_attn_implementation": decoder.config._attn_implementation,
        "hf_build_s": hf_build_s,
        "ours_load_s": ours_build_s,
        "n_params_ours": sum(p.numel() for p in ours.parameters()),
        "n_params_hf_decoder": sum(p.numel() for p in decoder.parameters()),
        "n_params_hf_conditioning_encoder": sum(p.numel() for p in cond_encoder.parameters()),
        "layers": ours.config.layers,
        "model_dim": ours.config.model_dim,
        "heads": ours.config.heads,
    }
    return cond_encoder, decoder, ours, info


@torch.inference_mode()
def make_inputs(
    cond_encoder: Any, ours: AutoregressiveModel, seed: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Fixed random text ids (T,), our conditioning latent (C,) and HF's conditioning embeds (1, P, C).

    Checks that both sides built the same prompt, so any speed difference is not a difference in inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    text_ids = torch.cat([torch.randint(3, 255, (TEXT_IDS,), generator=generator), torch.zeros(1, dtype=torch.long)])
    mel = torch.randn(1, 80, COND_FRAMES, generator=generator)
    text_ids, mel = text_ids.to(device), mel.to(device)
    latent = ours.conditioning_encoder(mel)[0]
    embeds = cond_encoder(input_features=mel, input_ids=text_ids[None])
    mine = ours.embed_prompt(latent[None], ours.wrap_text(text_ids[None]))
    torch.testing.assert_close(mine, embeds, atol=1e-4, rtol=1e-4, msg=lambda m: f"prompts differ: {m}")
    return text_ids, latent, embeds


# the two samplers --------------------------------------------------------------------------------------------------
def ours_sampler(
    model: AutoregressiveModel, latent: Tensor, text_ids: Tensor, device: torch.device
) -> Callable[[int, int, int], Tensor]:
    """(candidates, tokens, seed) -> codes (candidates, tokens) from `sample_candidates`, one batch."""

    def run(candidates: int, tokens: int, seed: int) -> Tensor:
        options = DecodingOptions(
            sampling=SAMPLING, num_candidates=candidates, batch_size=candidates,
            max_new_tokens=tokens, min_new_tokens=tokens, mel_positions="kv_cache_quirk",
        )
        generator = torch.Generator(device).manual_seed(seed)
        return sample_candidates(model, latent, text_ids, options, generator)

    return run


def hf_sampler(decoder: Any, embeds: Tensor) -> Callable[[int, int, int], Tensor]:
    """(candidates, tokens, seed) -> codes (candidates, tokens) from ``ClvpForCausalLM.generate``.

    The conditioning embeds go in with batch 1: generate repeat_interleaves them (and the mask) itself for
    num_return_sequences; passing them already repeated would give candidates² rows.
    """
    mask = torch.ones(1, embeds.shape[1] + 1, dtype=torch.long, device=embeds.device)  # + the start token

    def run(candidates: int, tokens: int, seed: int) -> Tensor:
        torch.manual_seed(seed)
        out = decoder.generate(
            conditioning_embeds=embeds, attention_mask=mask, do_sample=True,
            temperature=SAMPLING.temperature, top_p=SAMPLING.top_p, top_k=0,
            repetition_penalty=SAMPLING.repetition_penalty, min_new_tokens=tokens, max_new_tokens=tokens,
            num_return_sequences=candidates, eos_token_id=TOKENS.mel_stop, pad_token_id=TOKENS.mel_stop,
            return_dict_in_generate=True,
        )
        sequences = out.sequences
        assert sequences.shape == (candidates, tokens + 1), f"HF returned {tuple(sequences.shape)}"
        assert bool((sequences[:, 0] == TOKENS.mel_start).all()), "HF's first column should be the start token"
        return sequences[:, 1:]

    return run


def check_codes(codes: Tensor, candidates: int, tokens: int, who: str) -> None:
    """Exactly candidates x tokens speech codes, none of them the stop token (the length was forced)."""
    assert codes.shape == (candidates, tokens), f"{who}: got {tuple(codes.shape)}, want {(candidates, tokens)}"
    assert not bool((codes == TOKENS.mel_stop).any()), f"{who}: stop token inside a forced-length run"


def time_pair(
    samplers: dict[str, Callable[[int, int, int], Tensor]],
    candidates: int,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Runs]:
    """Warm every sampler up, then interleave them (A B, B A, ...) for `args.repeats` timed, shape-checked runs."""
    warmup_tokens = min(args.warmup_tokens, args.tokens)
    for name, sample in samplers.items():
        check_codes(sample(candidates, warmup_tokens, args.seed), candidates, warmup_tokens, name)
    runs = {name: Runs() for name in samplers}
    order = list(samplers.items())
    for repeat in range(args.repeats):
        for name, sample in order if repeat % 2 == 0 else order[::-1]:  # ABBA: neither side always goes first
            seconds, codes = timed(lambda: sample(candidates, args.tokens, args.seed + 1 + repeat), device)
            check_codes(codes, candidates, args.tokens, name)
            runs[name].add(seconds)
    return runs


def speed_entry(runs: Runs, candidates: int, tokens: int) -> dict[str, Any]:
    return {**runs.as_dict(), "tokens_per_s": candidates * tokens / runs.median_s}


def memory_entry(device: torch.device) -> dict[str, Any]:
    """Process-wide peak and current RSS, accelerator peak, and the 1-minute load average (a noise indicator)."""
    return {"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb(), "cuda_peak_mb": cuda_peak_mb(device),
            "loadavg_1m": load_average()}


# bf16 accuracy -----------------------------------------------------------------------------------------------------
@torch.inference_mode()
def teacher_forced_logits(model: AutoregressiveModel, latent: Tensor, text_ids: Tensor, codes: Tensor) -> Tensor:
    """Logits (len(codes), V) in fp32: step 0 from the prefill, step i from feeding codes[i - 1] (kv-cache positions)."""
    dtype = model.dtype
    device = model.device
    prompt = model.embed_prompt(latent[None].to(device, dtype), model.wrap_text(text_ids[None].to(device)))
    start = model.embed_mel(torch.full((1, 1), TOKENS.mel_start, device=device), torch.zeros(1, dtype=torch.long, device=device))
    prefix = torch.cat([prompt, start.to(dtype)], dim=1)
    model.setup_cache(1, prefix.shape[1] + codes.numel())
    try:
        logits = [model.prefill(prefix)]
        for step in range(codes.numel() - 1):
            logits.append(model.decode_step(codes[step : step + 1].to(device), step + 2, prefix.shape[1] + step))
    finally:
        model.release_cache()
    return torch.cat(logits).float()


def logit_error(test: Tensor, ref: Tensor) -> dict[str, float]:
    """max |Δ|, mean |Δ|, relative error max |Δ| / max |ref|, and how often the top-1 id agrees."""
    diff = (test - ref).abs()
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "rel_to_max_ref": float(diff.max() / ref.abs().max()),
        "ref_max_abs": float(ref.abs().max()),
        "top1_agreement": float((test.argmax(-1) == ref.argmax(-1)).float().mean()),
    }


# report ------------------------------------------------------------------------------------------------------------
def reference_context() -> dict[str, Any] | None:
    """The speed anchors in the shared reference (original Tortoise and HF, 100 tokens, 2 threads), if present."""
    data = load_reference("timings_cpu2.json")
    if data is None:
        return None
    keep = ("stage", "candidates", "new_tokens", "median_s", "times_s", "decoder_only_median_s",
            "decoder_only_times_s", "peak_rss_mb", "how", "torch", "transformers", "threads")
    pick = lambda entry: {k: entry[k] for k in keep if k in entry}  # noqa: E731
    original = {k: pick(v) for k, v in data.get("original", {}).items() if k.startswith("ar")}
    hf = {k: pick(v) for k, v in data.get("hf_transformers", {}).items()}
    return {"path": data.get("path"), "machine": data.get("machine"), "method": data.get("method"),
            "original": original, "hf_transformers": hf}


def print_reference(reference: dict[str, Any] | None) -> None:
    if not reference:
        print("\n(no reference timings found: set $CLVP_REFERENCE_DIR)")
        return
    rows = []
    for name, entry in reference["original"].items():
        rows.append([f"original {name}", entry.get("candidates"), entry.get("new_tokens"), entry.get("median_s")])
    for name, entry in reference["hf_transformers"].items():
        rows.append([f"HF {name} (decoder only)", entry.get("candidates"), entry.get("new_tokens"),
                     entry.get("decoder_only_median_s")])
    print(f"\nreference ({reference['path']}):")
    print(format_table(["what", "candidates", "tokens", "median s"], rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "benchmark": "ar_decode",
        "status": "running",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "candidate_counts"},
        "method": (
            "fixed length: min_new_tokens = max_new_tokens = tokens on both sides; sampling temperature 0.8, "
            "top_p 0.8, repetition_penalty 2.0, no top-k (HF: top_k=0); one batch of `candidates` rows from one "
            "conditioning (ours: sample_candidates(batch_size=candidates, mel_positions='kv_cache_quirk'); HF: "
            "speech_decoder_model.generate(conditioning_embeds (1, P, C), num_return_sequences=candidates)); "
            "conditioning computed once outside the clock; per candidate count a warm-up of warmup_tokens for "
            "each, then ours/HF alternate; seconds = perf_counter around the whole call (device synchronised); "
            "median of repeats. speedup = HF median / ours median. peak_rss_mb = ru_maxrss of the whole process "
            "so far (includes building the HF model, ours and, later, the bf16 copy)."
        ),
    }

    print(f"building full-size models (seed {args.seed}) ...", flush=True)
    cond_encoder, decoder, ours, setup = build_models(args.seed, device)
    text_ids, latent, embeds = make_inputs(cond_encoder, ours, args.seed, device)
    del cond_encoder
    setup.update(text_tokens=int(text_ids.numel()), cond_mel_shape=[1, 80, COND_FRAMES],
                 prompt_len=int(embeds.shape[1]) + 1, **memory_entry(device))
    extra = {"transformers": setup["transformers"], "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    result["system"] = system_info(device, {**extra, "loadavg_1m_at_start": load_average()})
    result["setup"] = setup
    result["reference"] = reference_context()
    print(f"  HF build {setup['hf_build_s']:.1f} s, ours load {setup['ours_load_s']:.1f} s, "
          f"{setup['n_params_ours'] / 1e6:.0f} M params (ours), prompt {setup['prompt_len']} positions, "
          f"HF attention {setup['hf_attn_implementation']!r}", flush=True)

    # what TextToSpeech runs: on CPU fp32 the decoder's linears get oneDNN-packed weights; `ours` stays plain as
    # the fp32 reference for the bf16 section
    fast = copy.deepcopy(ours)
    setup["packed_linears"] = pack_linears(fast)
    codes = torch.randint(0, TOKENS.mel_start, (args.check_tokens,), generator=torch.Generator().manual_seed(args.seed))
    setup["packed_vs_plain_logits"] = logit_error(
        teacher_forced_logits(fast, latent, text_ids, codes.to(device)),
        teacher_forced_logits(ours, latent, text_ids, codes.to(device)),
    )
    print(f"  {setup['packed_linears']} linears packed; logits vs plain: max |d| "
          f"{setup['packed_vs_plain_logits']['max_abs']:.2e}", flush=True)
    samplers = {"ours": ours_sampler(fast, latent, text_ids, device), "hf": hf_sampler(decoder, embeds)}
    fp32_rows: list[dict[str, Any]] = []
    result["fp32"] = fp32_rows
    for candidates in args.candidate_counts:
        print(f"fp32, {candidates} candidate(s) x {args.tokens} tokens ...", flush=True)
        runs = time_pair(samplers, candidates, args, device)
        fp32_rows.append({
            "candidates": candidates,
            "tokens": args.tokens,
            "ours": speed_entry(runs["ours"], candidates, args.tokens),
            "hf": speed_entry(runs["hf"], candidates, args.tokens),
            "speedup": runs["hf"].median_s / runs["ours"].median_s,
            **memory_entry(device),
        })
        write_json_atomic(args.out, result)
    del samplers["hf"], decoder, embeds
    gc.collect()

    print(f"\nfp32, {args.tokens} forced tokens per candidate, {args.threads} thread(s), {device}, "
          f"median of {args.repeats} (all runs in the JSON)")
    print(format_table(
        ["candidates", "ours s", "HF s", "ours tok/s", "HF tok/s", "speed-up", "peak RSS MB", "load 1m"],
        [[r["candidates"], r["ours"]["median_s"], r["hf"]["median_s"], r["ours"]["tokens_per_s"],
          r["hf"]["tokens_per_s"], r["speedup"], r["peak_rss_mb"], r["loadavg_1m"]] for r in fp32_rows],
    ), flush=True)

    if args.dtype_check:
        result["bf16"] = run_bf16(args, ours, latent, text_ids, fp32_rows, device, result)

    print_reference(result["reference"])
    finish(args.out, result)
    return 0


def run_bf16(
    args: argparse.Namespace,
    ours: AutoregressiveModel,
    latent: Tensor,
    text_ids: Tensor,
    fp32_rows: list[dict[str, Any]],
    device: torch.device,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Our model cast to bfloat16: timings at the same candidate counts, and logit error against fp32."""
    print("\nbf16: casting a copy of our model ...", flush=True)
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    section: dict[str, Any] = {"how": "copy.deepcopy(ours).to(torch.bfloat16); conditioning latent from fp32, cast "
                                      "by sample_candidates; sampling maths in fp32 (logits.float())"}
    codes = torch.randint(0, TOKENS.mel_start, (args.check_tokens,), generator=torch.Generator().manual_seed(args.seed))
    ref = teacher_forced_logits(ours, latent, text_ids, codes)
    test = teacher_forced_logits(ours_bf16, latent, text_ids, codes)
    section["accuracy"] = {
        "codes": f"{args.check_tokens} random ids in [0, 8192), seed {args.seed}, teacher-forced with prefill + decode_step",
        "first_step": logit_error(test[:1], ref[:1]),
        "sequence": logit_error(test, ref),
    }
    sampler = {"ours_bf16": ours_sampler(ours_bf16, latent, text_ids, device)}
    rows: list[dict[str, Any]] = []
    section["timings"] = rows
    result["bf16"] = section
    for fp32 in fp32_rows:
        candidates = fp32["candidates"]
        print(f"bf16, {candidates} candidate(s) x {args.tokens} tokens ...", flush=True)
        runs = time_pair(sampler, candidates, args, device)["ours_bf16"]
        rows.append({
            "candidates": candidates,
            "tokens": args.tokens,
            "ours_bf16": speed_entry(runs, candidates, args.tokens),
            "ours_fp32_median_s": fp32["ours"]["median_s"],
            "speedup_vs_fp32": fp32["ours"]["median_s"] / runs.median_s,
            **memory_entry(device),
        })
        write_json_atomic(args.out, result)
    synchronize(device)

    print(f"\nbf16 (ours), {args.tokens} forced tokens per candidate")
    print(format_table(
        ["candidates", "fp32 s", "bf16 s", "bf16 tok/s", "bf16 speed-up", "peak RSS MB", "load 1m"],
        [[r["candidates"], r["ours_fp32_median_s"], r["ours_bf16"]["median_s"], r["ours_bf16"]["tokens_per_s"],
          r["speedup_vs_fp32"], r["peak_rss_mb"], r["loadavg_1m"]] for r in rows],
    ))
    acc = section["accuracy"]
    print(format_table(
        ["bf16 vs fp32 logits", "max |d|", "mean |d|", "max|d|/max|ref|", "top-1 agree"],
        [[name, e["max_abs"], e["mean_abs"], e["rel_to_max_ref"], e["top1_agreement"]]
         for name, e in (("first step", acc["first_step"]), (f"{args.check_tokens} teacher-forced", acc["sequence"]))],
        digits=4,
    ), flush=True)
    return section


if __name__ == "__main__":
    sys.exit(main())
