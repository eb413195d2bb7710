"""The Python API on the tiny seeded models and synthesized clips; the candidate stage also stage by stage against
the original's pipeline (s0-s7) on the reference folder's tiny original checkpoints (parity tests)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import read_json, read_tensors

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.errors import AudioError, InputTextError, OptionsError
from tortoise_clvp.models.clvp import ClvpModel
from tortoise_clvp.models.packed_linear import PackedLinear
from tortoise_clvp.pipeline.conditioning import Conditioning
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.pipeline.rerank import score_candidates
from tortoise_clvp.pipeline.samplers import SamplerOptions
from tortoise_clvp.pipeline.sampling import FAITHFUL_SAMPLING
from tortoise_clvp.presets import GenerationOptions
from tortoise_clvp.seeds import CROP_SEED
from tortoise_clvp.train.clvp import padded_candidates


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture(scope="module")
def original(reference_model_dir):
    """The reference folder's tiny original checkpoints (parity tests)."""
    return TextToSpeech.from_local(reference_model_dir)


@pytest.fixture(scope="module")
def pipeline(reference_dir):
    folder = reference_dir / "pipeline_tiny"
    return read_json(folder / "config.json"), read_tensors(folder / "cases.safetensors"), read_tensors(reference_dir / "audio_cases.safetensors")


def _faithful_options(meta) -> DecodingOptions:
    sampling = FAITHFUL_SAMPLING.__class__(
        temperature=meta["temperature"], top_p=meta["top_p"], top_k=50,
        repetition_penalty=meta["repetition_penalty"], penalize_prompt_ids=True,
    )
    return DecodingOptions(
        sampling=sampling,
        num_candidates=meta["num_autoregressive_samples"],
        batch_size=meta["autoregressive_batch_size"],
        max_new_tokens=meta["max_mel_tokens"],
        mel_positions="kv_cache_quirk" if meta["kv_cache"] else "contiguous",
        drop_remainder=True,
    )


def test_pipeline_stages_match_original(original, pipeline):
    tts = original
    meta, cases, audio = pipeline
    assert torch.equal(tts.tokenize(meta["text"]), cases["s0.text_tokens"][0])

    mels = torch.stack([audio[f"{clip}.format_conditioning"] for clip in meta["clips"]], dim=1)
    latent = tts.models.autoregressive.get_conditioning(mels)
    torch.testing.assert_close(latent, cases["s1.auto_latent"], atol=1e-4, rtol=1e-4)

    result = tts.candidates(meta["text"], Conditioning(latent[0]), _faithful_options(meta), k=meta["k"], seed=meta["s3_seed"])
    assert torch.equal(result.raw_codes, cases["s3.padded_codes"])
    assert torch.equal(result.ranked.codes, cases["s4.fixed_codes"])
    torch.testing.assert_close(result.ranked.scores, cases["s5.clvp_scores"], atol=1e-4, rtol=1e-4)
    assert torch.equal(result.best, cases["s5.topk_indices"])
    assert [tuple(l.shape) for l in result.latents] == [tuple(cases[f"s7.cand{i}.trimmed_latents"].shape[1:]) for i in range(meta["k"])]
    for i, latents in enumerate(result.latents):
        torch.testing.assert_close(latents, cases[f"s7.cand{i}.trimmed_latents"][0], atol=1e-4, rtol=1e-4)
    assert set(result.timings) == {"conditioning", "sampling", "reranking", "latents"}


def test_best_latents_before_trimming_match_original(original, pipeline):
    tts = original
    meta, cases, _ = pipeline
    k = meta["k"]
    model = tts.models.autoregressive
    with torch.no_grad():
        latents = model.speech_latents(cases["s1.auto_latent"].expand(k, -1), cases["s0.text_tokens"].expand(k, -1), cases["s5.best_codes"])
    torch.testing.assert_close(latents, cases["s6.best_latents"], atol=1e-4, rtol=1e-4)


def test_clips_to_candidates_with_a_seed_is_repeatable(tts, speech_clips):
    clips = [speech_clips["mono_22k"], speech_clips["mono_24k"]]
    options = DecodingOptions(num_candidates=3, batch_size=2, max_new_tokens=20)
    first = tts.candidates("Good morning.", clips, options, k=2, seed=11)
    second = tts.candidates("Good morning.", clips, options, k=2, seed=11)
    assert first.seed == 11 and torch.equal(first.raw_codes, second.raw_codes)
    assert torch.equal(first.ranked.scores, second.ranked.scores)
    assert first.raw_codes.shape == (3, 20) and len(first.latents) == 2
    assert (first.ranked.scores[first.best[0]] >= first.ranked.scores).all()
    drawn = tts.candidates("Good morning.", clips, options)
    assert isinstance(drawn.seed, int)


def test_a_scorer_with_score_padding_scores_candidates_laid_out_as_it_was_trained(tts, speech_clips):
    tokens = tts.models.autoregressive.config.tokens
    lengths = [3, 11, 6, 8]
    raw = torch.full((4, 60), tokens.mel_stop)
    for row, length in enumerate(lengths):
        raw[row, :length] = torch.randint(0, 500, (length,), generator=torch.Generator().manual_seed(row))

    def sampler(*_args, **_kwargs):  # stands in for the decoder: candidates of known lengths, stop-padded
        return raw.clone()

    options = DecodingOptions(num_candidates=4, batch_size=4, max_new_tokens=60)
    clips = [speech_clips["mono_22k"]]
    full = TextToSpeech(tts.models, sampler).candidates("Good morning.", clips, options, k=2, seed=5)
    assert full.ranked.codes.shape == (4, 60)  # the original: every sampled position is scored
    scorer = ClvpModel(replace(tts.models.clvp.config, score_padding=2)).eval()
    scorer.load_state_dict(tts.models.clvp.state_dict())
    short = TextToSpeech(replace(tts.models, clvp=scorer), sampler).candidates("Good morning.", clips, options, k=2, seed=5)
    laid_out = padded_candidates([row[:n] for row, n in zip(raw, lengths)], 11 + 1 + len(tokens.fix_tail) + 2, tokens)
    assert torch.equal(short.ranked.codes, laid_out)  # exactly the training stage's layout
    assert torch.allclose(short.ranked.scores, score_candidates(scorer, short.text_ids, laid_out))
    assert not torch.allclose(short.ranked.scores, full.ranked.scores)  # the padding the mean sees changed
    assert short.lengths.tolist() == lengths and torch.equal(short.raw_codes, raw)


def test_bad_inputs_are_clear_errors(tts, tmp_path, speech_clip):
    clip = speech_clip
    options = DecodingOptions(num_candidates=2, batch_size=2, max_new_tokens=5)
    with pytest.raises(InputTextError):
        tts.candidates("", [clip], options)
    with pytest.raises(InputTextError):
        tts.candidates("🙂🙂", [clip], options)
    with pytest.raises(InputTextError, match="at most"):
        tts.candidates("word " * (tts.models.autoregressive.config.max_text_tokens + 1), [clip], options)
    with pytest.raises(OptionsError, match="k=3"):
        tts.candidates("Hello.", [clip], options, k=3)
    with pytest.raises(AudioError):
        tts.candidates("Hello.", [tmp_path / "missing.wav"], options)
    with pytest.raises(AudioError, match="silent"):
        tts.candidates("Hello.", [torch.zeros(1, 22050)], options)
    with pytest.raises(AudioError, match="no voice clips"):
        tts.candidates("Hello.", [], options)


def _tiny_generation(k: int = 1, sampler: str = "dpm++2m") -> GenerationOptions:
    return GenerationOptions(
        decoding=DecodingOptions(num_candidates=3, batch_size=3, max_new_tokens=24),
        diffusion=SamplerOptions(sampler=sampler, steps=4),
        k=k,
    )


def test_generate_makes_repeatable_audio_and_saves_it(tts, speech_clip, tmp_path):
    clips = [speech_clip]
    speech = tts.generate("Hello there.", clips, _tiny_generation(k=2), seed=3)
    again = tts.generate("Hello there.", clips, _tiny_generation(k=2), seed=3)
    assert speech.sample_rate == 24000 and len(speech.waveforms) == 2
    for wav, latents in zip(speech.waveforms, speech.candidates.latents):
        assert wav.dim() == 1 and wav.shape[0] == latents.shape[0] * 4 * 24000 // 22050 * 256
        assert torch.isfinite(wav).all()
    assert all(torch.equal(a, b) for a, b in zip(speech.waveforms, again.waveforms))
    assert {"diffusion", "vocoder"} <= set(speech.timings)
    path = speech.save(tmp_path / "out.wav")
    import soundfile

    data, rate = soundfile.read(path)
    assert rate == 24000 and data.shape[0] == speech.waveform.shape[0]


def test_generate_with_pruning_finishes_the_kept_candidates_of_sample_pruned(tts, speech_clip):
    from tortoise_clvp.pipeline.pruning import PruneOptions, expected_speech_tokens, sample_pruned

    decoding = DecodingOptions(num_candidates=4, batch_size=2, max_new_tokens=24)
    prune = PruneOptions(at_tokens=3, keep=0.5)
    options = replace(_tiny_generation(k=2), decoding=decoding, prune=prune)
    speech = tts.generate("Hello there.", [speech_clip], options, seed=5)
    result = speech.candidates
    assert result.raw_codes.shape[0] == 2 and len(speech.waveforms) == 2  # 4 sampled, 2 finished and ranked
    conditioning = tts.get_conditioning([speech_clip])
    direct = sample_pruned(tts.models.autoregressive, conditioning.autoregressive, result.text_ids, decoding, prune,
                           torch.Generator().manual_seed(5), tts.models.clvp,
                           expected_speech_tokens(tts.models.tokenizer.clean("Hello there.")))
    assert torch.equal(result.raw_codes, direct.codes.cpu())
    again = tts.generate("Hello there.", [speech_clip], options, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(speech.waveforms, again.waveforms))
    with pytest.raises(OptionsError, match="k=3 best candidates requested but only 2 are finished"):
        tts.generate("Hello there.", [speech_clip], replace(options, k=3), seed=5)
    shared = TextToSpeech(tts.models, sampler=lambda *args, **kwargs: None)  # a server's shared decoder
    with pytest.raises(OptionsError, match="shares its decoder"):
        shared.generate("Hello there.", [speech_clip], options, seed=5)


def test_generate_accepts_a_preset_name_and_conditioning(tts, speech_clips):
    conditioning = tts.get_conditioning([speech_clips["mono_24k"]], seed=1)
    assert conditioning.diffusion is not None
    speech = tts.generate("Hi.", conditioning, _tiny_generation(sampler="p"), seed=1)
    assert speech.duration > 0
    with pytest.raises(OptionsError, match="unknown preset"):
        tts.generate("Hi.", conditioning, "warp_speed")
    with pytest.raises(OptionsError, match="no diffusion latent"):
        tts.generate("Hi.", Conditioning(conditioning.autoregressive), _tiny_generation())


def test_generate_without_waveform_models_says_what_is_missing(tts, speech_clip):
    import dataclasses

    from tortoise_clvp.errors import CheckpointError

    partial = TextToSpeech(dataclasses.replace(tts.models, vocoder=None))  # as loaded from a folder without it
    with pytest.raises(CheckpointError, match="vocoder.pth"):
        partial.generate("Hi.", [speech_clip], _tiny_generation())


def test_compiled_steps_give_the_same_results(tiny_model_dir, speech_clip):
    eager = TextToSpeech.from_local(tiny_model_dir)
    compiled = TextToSpeech.from_local(tiny_model_dir, compile=True)
    clips = [speech_clip]
    greedy = DecodingOptions(sampling=FAITHFUL_SAMPLING.__class__(do_sample=False), num_candidates=2, batch_size=2, max_new_tokens=12)
    a = eager.candidates("Hello.", clips, greedy, seed=0)
    b = compiled.candidates("Hello.", clips, greedy, seed=0)
    assert torch.equal(a.raw_codes, b.raw_codes)
    options = _tiny_generation(sampler="ddim")
    torch.testing.assert_close(
        compiled.generate("Hello.", clips, options, seed=2).waveform, eager.generate("Hello.", clips, options, seed=2).waveform,
        atol=1e-3, rtol=1e-3,
    )


def test_compile_on_cpu_float32_keeps_the_packed_decoder(tiny_model_dir):
    tts = TextToSpeech.from_local(tiny_model_dir, compile=True)
    decoder = tts.models.autoregressive
    assert any(isinstance(m, PackedLinear) for m in decoder.modules())
    assert "decode_step" not in vars(decoder)  # the eager, packed step (compiling swaps in an instance attribute)
    assert "forward" in vars(tts.models.diffusion)


def test_bfloat16_models_make_finite_audio(tiny_model_dir, speech_clip):
    tts = TextToSpeech.from_local(tiny_model_dir, dtype="bfloat16")  # by name, as the command line passes it
    assert tts.models.autoregressive.dtype == torch.bfloat16
    speech = tts.generate("Hello.", [speech_clip], _tiny_generation(), seed=1)
    assert torch.isfinite(speech.waveform).all() and speech.waveform.dtype == torch.float32
    with pytest.raises(OptionsError, match="unknown dtype 'bf16'"):
        TextToSpeech.from_local(tiny_model_dir, dtype="bf16")


def test_generate_times_the_voice_conditioning(tts, speech_clip, monkeypatch):
    real = tts.get_conditioning

    def slow(*args, **kwargs):
        import time

        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(tts, "get_conditioning", slow)
    speech = tts.generate("Hi.", [speech_clip], _tiny_generation(), seed=0)
    assert speech.timings["conditioning"] >= 0.2


def test_one_crop_seed_whatever_the_generation_seed(tts, speech_clips, monkeypatch):
    long = speech_clips["long_16k_float_loud"]  # longer than the 6 s crop, so the crop seed changes the latents
    default = tts.get_conditioning([long])
    assert torch.equal(default.autoregressive, tts.get_conditioning([long], CROP_SEED).autoregressive)
    assert not torch.equal(default.autoregressive, tts.get_conditioning([long], CROP_SEED + 1).autoregressive)

    options = DecodingOptions(num_candidates=2, batch_size=2, max_new_tokens=12)
    from_clips = tts.candidates("Hello.", [long], options, seed=5)
    from_latents = tts.candidates("Hello.", default, options, seed=5)
    assert torch.equal(from_clips.raw_codes, from_latents.raw_codes)

    seeds = []
    real = tts.get_conditioning
    monkeypatch.setattr(tts, "get_conditioning", lambda clips, seed=CROP_SEED, progress=None: (
        seeds.append(seed) or real(clips, seed, progress)))
    tts.candidates("Hello.", [long], options, seed=11)
    tts.generate("Hello.", [long], _tiny_generation(), seed=12)
    assert seeds == [CROP_SEED, CROP_SEED]


def test_progress_reports_every_stage_step_by_step(tiny_model_dir, speech_clip):
    events = []
    tts = TextToSpeech.from_local(tiny_model_dir, progress=lambda *event: events.append(event))
    options = GenerationOptions(
        decoding=DecodingOptions(num_candidates=5, batch_size=2, max_new_tokens=20),
        diffusion=SamplerOptions(sampler="ddim", steps=3),
        k=2,
        clvp_batch_size=2,
    )
    tts.generate("Hello there.", [speech_clip], options, seed=4, progress=lambda *event: events.append(event))
    by_stage: dict[str, list[tuple[int, int]]] = {}
    for stage, done, total in events:
        by_stage.setdefault(stage, []).append((done, total))
    assert by_stage["loading models"] == [(0, 1), (1, 1)]
    assert by_stage["conditioning"] == [(0, 1), (1, 1)]
    sampling = by_stage["sampling"]  # tokens out of the budget: 3 batches x 20 tokens, one report per step at least
    assert all(total == 60 for _, total in sampling) and sampling[-1] == (60, 60)
    assert len(sampling) >= 3 and [done for done, _ in sampling] == sorted(done for done, _ in sampling)
    assert sampling[0][0] == 1  # the first step is reported, not only whole batches
    finished = by_stage["candidates finished"]
    assert finished[-1] == (5, 5) and [done for done, _ in finished] == sorted(done for done, _ in finished)
    assert by_stage["reranking"] == [(1, 3), (2, 3), (3, 3)]
    assert by_stage["diffusion"][-1] == (6, 6) and len(by_stage["diffusion"]) == 6
    assert by_stage["vocoder"] == [(1, 2), (2, 2)]
