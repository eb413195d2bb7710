"""Long texts on the tiny models: splitting, one conditioning, seeds, crossfaded joins, streaming, resuming."""

from __future__ import annotations

import json

import pytest
import soundfile
import torch

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.errors import InputTextError, OptionsError
from tortoise_clvp.frontend.text import split_and_recombine_text
from tortoise_clvp.longform import (
    CROSSFADE_MS,
    MANIFEST_NAME,
    LongSpeech,
    WorkDirError,
    STREAMING_FIRST_CHUNK,
    _fade_gains,
    chunk_seed,
    chunk_texts,
    join_waveforms,
    speak_long,
    stream_speech,
)
from tortoise_clvp.pipeline.conditioning import Conditioning
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.pipeline.samplers import SamplerOptions
from tortoise_clvp.presets import GenerationOptions

TEXT = "The sun rose over the hills. Birds sang in the trees! A farmer walked to the barn."
SPLIT = {"desired_length": 20, "max_length": 40}
SEED = 5
RATE = 24000
FADE = round(CROSSFADE_MS * RATE / 1000)
OPTIONS = GenerationOptions(
    decoding=DecodingOptions(num_candidates=3, batch_size=3, max_new_tokens=24),
    diffusion=SamplerOptions(sampler="dpm++2m", steps=4),
)


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture(scope="module")
def clips(speech_clips):
    return [speech_clips["long_16k_float_loud"]]  # longer than the 6 s crop: the crop seed matters


class _Counting:
    """Wraps a bound method, recording the first argument of every call; optionally raises on call `fail_on`."""

    def __init__(self, method, fail_on: int | None = None, error: BaseException | None = None):
        self.method, self.calls, self.fail_on, self.error = method, [], fail_on, error

    def __call__(self, *args, **kwargs):
        self.calls.append(args[0])
        if len(self.calls) == self.fail_on:
            raise self.error
        return self.method(*args, **kwargs)


@pytest.fixture(scope="module")
def long_run(tts, clips):
    """(result, conditioning calls, progress events) of one uninterrupted run."""
    events = []
    with pytest.MonkeyPatch.context() as patch:
        conditioning = _Counting(tts.get_conditioning)
        patch.setattr(tts, "get_conditioning", conditioning)
        result = speak_long(tts, TEXT, clips, OPTIONS, SEED, progress=lambda *event: events.append(event), **SPLIT)
    return result, conditioning.calls, events


def test_chunks_follow_the_splitter_and_the_seed_policy(long_run):
    result, _, _ = long_run
    texts = split_and_recombine_text(TEXT, **SPLIT)
    assert isinstance(result, LongSpeech) and len(texts) == 3
    assert result.texts == texts and [chunk.index for chunk in result.chunks] == [0, 1, 2]
    assert result.seed == SEED and result.seeds == [chunk_seed(SEED, i) for i in range(3)] == [5, 7, 9]
    assert result.sample_rate == RATE
    for chunk in result.chunks:
        assert chunk.count == 3 and not chunk.resumed and chunk.speech is not None
        assert chunk.scores.shape == (3,) and chunk.best.tolist() == chunk.speech.candidates.best.tolist()
        assert torch.equal(chunk.waveform, chunk.speech.waveform)
    assert {"conditioning", "sampling", "diffusion", "vocoder", "total"} <= set(result.timings)


def test_a_short_first_chunk_is_split_off_and_the_rest_follows_as_usual():
    text = "One two three. Four five six! Seven eight nine. Ten eleven twelve? Thirteen."
    usual = chunk_texts(text, 40, 60)
    assert usual == split_and_recombine_text(text, 40, 60) == ["One two three. Four five six! Seven eight nine.",
                                                               "Ten eleven twelve? Thirteen."]
    assert chunk_texts(text, 40, 60, STREAMING_FIRST_CHUNK) == [
        "One two three.", "Four five six! Seven eight nine.", "Ten eleven twelve? Thirteen."]
    assert chunk_texts("Only one sentence here.", 40, 60, 1) == ["Only one sentence here."]
    assert chunk_texts(text, 40, 60, 40) == usual
    for wrong in (0, 41):
        with pytest.raises(OptionsError, match="first_chunk_length"):
            chunk_texts(text, 40, 60, wrong)


def test_streaming_with_a_short_first_chunk_speaks_the_first_sentence_alone(tts, clips):
    stream = stream_speech(tts, TEXT, clips, OPTIONS, SEED, desired_length=40, max_length=60,
                           first_chunk_length=STREAMING_FIRST_CHUNK)
    assert split_and_recombine_text(TEXT, 40, 60)[0] == "The sun rose over the hills. Birds sang in the trees!"
    assert stream.texts == ["The sun rose over the hills.", "Birds sang in the trees!", "A farmer walked to the barn."]
    first = next(iter(stream))
    stream.close()
    assert torch.equal(first.waveform, tts.generate(stream.texts[0], clips, OPTIONS, SEED).waveform)


def test_conditioning_is_computed_once_and_progress_names_the_chunk(long_run):
    _, conditioning_calls, events = long_run
    assert len(conditioning_calls) == 1
    stages = {stage for stage, _, _ in events}
    assert {"chunk 1/3: sampling", "chunk 2/3: reranking", "chunk 3/3: diffusion"} <= stages
    assert [event for event in events if event[0] == "conditioning"] == [("conditioning", 0, 1), ("conditioning", 1, 1)]
    assert [event for event in events if event[0] == "chunks"] == [("chunks", 1, 3), ("chunks", 2, 3), ("chunks", 3, 3)]


def test_chunks_are_joined_with_a_short_crossfade(long_run):
    result, _, _ = long_run
    lengths = [chunk.waveform.numel() for chunk in result.chunks]
    assert min(lengths) > 2 * FADE
    assert result.waveform.numel() == sum(lengths) - 2 * FADE
    first, second = result.chunks[0].waveform, result.chunks[1].waveform
    assert torch.equal(result.waveform[: lengths[0] - FADE], first[:-FADE])  # untouched up to the seam
    fade_out, fade_in = _fade_gains(FADE)
    seam = result.waveform[lengths[0] - FADE : lengths[0]]
    torch.testing.assert_close(seam, first[-FADE:] * fade_out + second[:FADE] * fade_in)
    assert torch.equal(result.waveform, join_waveforms(result.waveforms, RATE))
    assert torch.equal(torch.cat([chunk.piece for chunk in result.chunks]), result.waveform)


def test_first_chunk_is_what_generate_makes_with_the_run_seed(tts, clips, long_run):
    result, _, _ = long_run
    speech = tts.generate(result.texts[0], clips, OPTIONS, SEED)
    assert torch.equal(speech.waveform, result.chunks[0].waveform)


def test_stream_yields_chunk_by_chunk_the_same_samples(tts, clips, long_run, monkeypatch):
    result, _, _ = long_run
    conditioning = tts.get_conditioning(clips)  # what speak_long computed once; a Conditioning is used as is
    counted_conditioning = _Counting(tts.get_conditioning)
    generate = _Counting(tts.generate)
    monkeypatch.setattr(tts, "get_conditioning", counted_conditioning)
    monkeypatch.setattr(tts, "generate", generate)
    stream = stream_speech(tts, TEXT, conditioning, OPTIONS, SEED, **SPLIT)
    assert stream.texts == result.texts and stream.seeds == result.seeds and generate.calls == []
    pieces = []
    for chunk in stream:
        assert len(generate.calls) == chunk.index + 1  # each chunk comes out as soon as it is made
        assert torch.equal(chunk.waveform, result.chunks[chunk.index].waveform)  # same seed, same audio
        assert torch.equal(chunk.scores, result.chunks[chunk.index].scores)
        pieces.append(chunk.piece)
    assert counted_conditioning.calls == []
    assert torch.equal(torch.cat(pieces), result.waveform)


def _listing(folder):
    return sorted(path.name for path in folder.iterdir())


def test_an_interrupted_run_resumes_with_only_the_missing_chunks(tts, clips, long_run, tmp_path, monkeypatch):
    result, _, _ = long_run
    work = tmp_path / "work"

    # 1. interrupted while writing the first chunk's file: nothing half-written is left, nothing is marked done
    real_write = soundfile.write

    def write_then_interrupt(stream, *args, **kwargs):
        real_write(stream, *args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(soundfile, "write", write_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            speak_long(tts, TEXT, clips, OPTIONS, SEED, work_dir=work, **SPLIT)
    assert _listing(work) == [MANIFEST_NAME]
    manifest = json.loads((work / MANIFEST_NAME).read_text())
    assert [chunk["done"] for chunk in manifest["chunks"]] == [False, False, False]

    # 2. interrupted while generating the second chunk: the first is kept, complete
    with monkeypatch.context() as patch:
        failing = _Counting(tts.generate, fail_on=2, error=KeyboardInterrupt())
        patch.setattr(tts, "generate", failing)
        with pytest.raises(KeyboardInterrupt):
            speak_long(tts, TEXT, clips, OPTIONS, SEED, work_dir=work, **SPLIT)
    assert _listing(work) == ["chunk_0000.wav", MANIFEST_NAME]
    manifest = json.loads((work / MANIFEST_NAME).read_text())
    assert manifest["texts"] == result.texts and manifest["seed"] == SEED
    assert [chunk["done"] for chunk in manifest["chunks"]] == [True, False, False]
    assert [chunk["seed"] for chunk in manifest["chunks"]] == result.seeds

    # 3. the rerun generates only chunks 2 and 3 and equals the uninterrupted run
    generate, conditioning = _Counting(tts.generate), _Counting(tts.get_conditioning)
    monkeypatch.setattr(tts, "generate", generate)
    monkeypatch.setattr(tts, "get_conditioning", conditioning)
    resumed = speak_long(tts, TEXT, clips, OPTIONS, SEED, work_dir=work, **SPLIT)
    assert generate.calls == result.texts[1:] and len(conditioning.calls) == 1
    assert [chunk.resumed for chunk in resumed.chunks] == [True, False, False]
    assert torch.equal(resumed.chunks[0].scores, result.chunks[0].scores)
    assert torch.equal(resumed.waveform, result.waveform)
    assert _listing(work) == ["chunk_0000.wav", "chunk_0001.wav", "chunk_0002.wav", MANIFEST_NAME]

    # 4. a finished folder generates nothing; seed=None adopts the folder's seed
    again = speak_long(tts, TEXT, clips, OPTIONS, None, work_dir=work, **SPLIT)
    assert again.seed == SEED and torch.equal(again.waveform, result.waveform)
    assert generate.calls == result.texts[1:] and len(conditioning.calls) == 1

    # 5. another text, seed, voice or options in the same folder is refused before anything runs
    other_options = GenerationOptions(decoding=OPTIONS.decoding, diffusion=SamplerOptions(sampler="ddim", steps=4))
    for kwargs, what in [
        ({"seed": SEED + 1}, "the seed"),
        ({"text": TEXT + " The end."}, "the text"),
        ({"options": other_options}, "the generation options"),
        ({"voice": [torch.randn(1, 22050 * 2) * 0.1]}, "the voice"),
    ]:
        call = {"text": TEXT, "voice": clips, "options": OPTIONS, "seed": SEED, **kwargs}
        with pytest.raises(WorkDirError, match=what):
            stream_speech(tts, call["text"], call["voice"], call["options"], call["seed"], work_dir=work, **SPLIT)
    assert generate.calls == result.texts[1:]


def test_bad_inputs_fail_before_anything_is_generated(tts, clips, tmp_path, monkeypatch):
    generate = _Counting(tts.generate)
    monkeypatch.setattr(tts, "generate", generate)
    for text in ["", "   \n\t ", " ... !! ?, ;: "]:
        with pytest.raises(InputTextError, match="nothing to speak"):
            stream_speech(tts, text, clips, OPTIONS, SEED)
    too_long = "word " * (tts.models.autoregressive.config.max_text_tokens + 1)
    with pytest.raises(InputTextError, match=r"chunk 1/1 .*at most.*lower max_length"):
        stream_speech(tts, too_long, clips, OPTIONS, SEED, desired_length=len(too_long), max_length=len(too_long))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(WorkDirError, match="is a file"):
        stream_speech(tts, TEXT, clips, OPTIONS, SEED, work_dir=a_file)
    with pytest.raises(WorkDirError, match="cannot use work_dir"):
        stream_speech(tts, TEXT, clips, OPTIONS, SEED, work_dir=a_file / "inside")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(WorkDirError, match="not a readable long-form manifest"):
        stream_speech(tts, TEXT, clips, OPTIONS, SEED, work_dir=tmp_path / "broken")
    with pytest.raises(OptionsError, match="no diffusion latent"):
        stream_speech(tts, TEXT, Conditioning(torch.zeros(4)), OPTIONS, SEED)
    with pytest.raises(OptionsError, match="crossfade_ms"):
        stream_speech(tts, TEXT, clips, OPTIONS, SEED, crossfade_ms=-1)
    with pytest.raises(OptionsError, match="unknown preset"):
        stream_speech(tts, TEXT, clips, "warp_speed", SEED)
    assert generate.calls == []


def test_join_handles_short_chunks_gaps_and_no_fade():
    fade_out, fade_in = _fade_gains(48)
    torch.testing.assert_close(fade_out**2 + fade_in**2, torch.ones(48))
    assert fade_out[0] > 0.99 and fade_in[-1] > 0.99
    waves = [torch.randn(1000), torch.randn(10), torch.randn(1000)]
    rate, ms = 24000, 2.0  # a 48-sample fade
    joined = join_waveforms(waves, rate, ms)
    # the 10-sample chunk overlaps the first chunk's tail over 10 samples and leaves no tail for the third
    assert joined.numel() == 1000 + 10 + 1000 - 10
    assert torch.equal(joined[:990], waves[0][:990]) and torch.equal(joined[-1000:], waves[2])
    assert torch.equal(join_waveforms(waves, rate, 0.0), torch.cat(waves))
    assert torch.equal(join_waveforms(waves[:1], rate, ms), waves[0])
    tiny = [torch.randn(5), torch.randn(3), torch.randn(7)]  # every chunk shorter than the fade
    assert join_waveforms(tiny, rate, ms).numel() == 5 + 3 + 7 - 3 - 0
    gapped = join_waveforms(waves, rate, ms, gap_ms=1.0)  # 24 samples of silence between fades
    assert gapped.numel() == sum(w.numel() for w in waves) + 2 * 24
    assert torch.equal(gapped[:952], waves[0][:952]) and torch.equal(gapped[1000:1024], torch.zeros(24))
    torch.testing.assert_close(gapped[952:1000], waves[0][952:] * fade_out)
    assert torch.isfinite(gapped).all() and torch.isfinite(join_waveforms(tiny, rate, ms, 1.0)).all()
