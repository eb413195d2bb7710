"""Reliability matrix: every class of bad input the engine accepts, through the public surface only.

One parametrized table per input class (text, voice clips, checkpoints, model directories, options, output paths,
rerank manifests, Ctrl-C). Each row is (how to make the bad input, the error it must raise, a substring proving the
message says what was wrong or what to do). Every row asserts both halves of the contract:

* a clear error: the right `TortoiseClvpError` subclass from the Python API; from the CLI exit status 2, exactly one
  ``error:`` line and no traceback (typer's own range checks give its ``Invalid value for`` box, also status 2);
* no partial output: the output folder is exactly as it was before (no new file, an existing file byte-identical, no
  hidden temporary or staging entry), a converted-model destination does not exist, a model directory that failed
  to load is unchanged, and the latent cache holds only complete files.

Finally a hypothesis test drives any unicode string through `TextToSpeech.tokenize` and the length check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tortoise_clvp.api import Speech, TextToSpeech
from tortoise_clvp.bench.rerank_report import run_rerank_benchmark
from tortoise_clvp.cli import app
from tortoise_clvp.config import TOKENS
from tortoise_clvp.errors import (
    AudioError,
    CheckpointError,
    InputTextError,
    OptionsError,
    TortoiseClvpError,
)
from tortoise_clvp.pipeline.conditioning import Conditioning
from tortoise_clvp.pipeline.decoding import DecodingOptions, check_lengths
from tortoise_clvp.pipeline.samplers import SamplerOptions
from tortoise_clvp.pipeline.sampling import SamplingOptions
from tortoise_clvp.presets import GenerationOptions
from tortoise_clvp.weights import native
from tortoise_clvp.weights.model_dir import convert

from conftest import TINY_CONFIGS, tiny_parts

runner = CliRunner()
FAST = ["--preset", "ultra_fast_dpm", "--candidates", "2", "--steps", "2", "--max-tokens", "16", "--chunk-chars", "40", "--quiet"]
RATE = 22050
LONG_TEXT = "This is the first sentence of the text. And here comes the second one, which is longer than the first."
TOO_LONG_TEXT = "word " * 200
MAX_TEXT_TOKENS = f"at most {TINY_CONFIGS['autoregressive'].max_text_tokens}"  # the tiny model's refusal of TOO_LONG_TEXT
MAX_NEW_TOKENS = f"max_new_tokens <= {TINY_CONFIGS['autoregressive'].mel_positions - 1}"  # its refusal of 1000 tokens
WIDE_LATENTS = 2 * TINY_CONFIGS["diffusion"].in_latent_channels  # a diffusion decoder that does not fit the decoder
NARROW_MELS = 80  # a vocoder that does not fit the diffusion decoder's 100 bands


# helpers -------------------------------------------------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (recursively) -> '<dir>' or the SHA-256 of its bytes; {} if it does not exist."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def _assert_unchanged(folder: Path, before: dict[str, str]) -> None:
    after = _snapshot(folder)
    added = sorted(set(after) - set(before))
    assert after == before, f"{folder} changed: added {added}, removed {sorted(set(before) - set(after))}"


def _without_resume_folder(out: Path, snapshot: dict[str, str]) -> dict[str, str]:
    """`snapshot` of the output folder less the documented resume folder of `speak -o speech.wav`, which keeps the
    finished chunks of a failed run for the next one: it may hold only complete files and a readable manifest."""
    resume = out / ".speech.wav.chunks"
    if not resume.is_dir():
        return snapshot
    for path in resume.rglob("*"):
        assert path.is_file() and not path.name.startswith(".") and not path.name.endswith((".partial", ".tmp")), path
    json.loads((resume / "manifest.json").read_text())
    return {k: v for k, v in snapshot.items() if k != resume.name and not k.startswith(resume.name + "/")}


def _assert_cache_complete(cache: Path) -> None:
    """Only whole, readable cache files: no temporary or half-written one."""
    for path in cache.rglob("*") if cache.exists() else []:
        assert not path.name.startswith(".") and not path.name.endswith((".partial", ".tmp")), f"stray {path}"
        with safe_open(str(path), framework="pt") as handle:
            assert list(handle.keys()), path


class Usage(str):
    """A CLI row rejected by typer's own option checks: its 'Invalid value for <option>' box, status 2."""


def _describe(result) -> str:
    detail = f"exit {result.exit_code}\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        detail += "".join(traceback.format_exception(result.exception))
    return detail


def _assert_cli_error(result, message: str, code: int = 2) -> None:
    detail = _describe(result)
    assert result.exit_code == code, detail
    assert isinstance(result.exception, SystemExit), detail
    assert "Traceback" not in result.output, detail
    if isinstance(message, Usage):
        assert "Invalid value for" in result.output and message in result.output, detail
        return
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, detail
    assert message in result.output, detail


def _wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    soundfile.write(str(path), samples.astype(np.float32), rate, subtype="FLOAT")
    return path


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * RATE)).astype(np.float32)


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _generation(k: int = 1, **decoding: Any) -> GenerationOptions:
    fields = {"num_candidates": 2, "batch_size": 2, "max_new_tokens": 16, **decoding}
    return GenerationOptions(DecodingOptions(**fields), SamplerOptions(sampler="dpm++2m", steps=2), k=k)


# fixtures ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tts(tiny_model_dir) -> TextToSpeech:
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture(scope="module")
def clip(speech_clip) -> Path:
    return speech_clip


@pytest.fixture(scope="module")
def conditioning(tts, clip) -> Conditioning:
    return tts.get_conditioning([clip], seed=0)


def _canned_speech() -> Speech:
    """A finished Speech (what `generate` returns) without running the pipeline: the save rows need only that."""
    wave = 0.1 * torch.sin(torch.arange(2400, dtype=torch.float32) / 10)
    return Speech([wave, wave.clone()], 24000, None, 0, {})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def speech() -> Speech:
    return _canned_speech()


@dataclass
class Api:
    tts: TextToSpeech
    cond: Conditioning
    clip: Path
    model_dir: Path
    work: Path  # inputs the row needs go here
    out: Path  # the output file a successful call would write; its folder starts empty


@pytest.fixture
def api(tts, conditioning, clip, tiny_model_dir, tmp_path) -> Api:
    (tmp_path / "work").mkdir()
    (tmp_path / "out").mkdir()
    return Api(tts, conditioning, clip, tiny_model_dir, tmp_path / "work", tmp_path / "out" / "speech.wav")


@pytest.fixture(scope="module")
def native_dirs(tmp_path_factory, tiny_model_dir, tiny_assets) -> dict[str, Path]:
    """The valid tiny native directory, and two whose parts do not fit each other."""
    root = tmp_path_factory.mktemp("native")
    wide = replace(TINY_CONFIGS["diffusion"], in_latent_channels=WIDE_LATENTS)
    narrow = replace(TINY_CONFIGS["vocoder"], mel_channels=NARROW_MELS)
    return {
        "valid": tiny_model_dir,
        "wide_latents": native.save_native(root / "wide_latents", tiny_parts(diffusion=wide), tiny_assets),
        "band_mismatch": native.save_native(root / "band_mismatch", tiny_parts(vocoder=narrow), tiny_assets),
    }


@dataclass
class Cli:
    out: Path  # the output folder (also the working directory), empty at the start
    inputs: Path  # text files, clips and manifests rows make
    cache: Path
    clip: Path
    model_dir: Path

    def run(self, *args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    def speak(self, *args: str, input: str | None = None, voice: str | None = None, output: str | None = None):
        return self.run("speak", *FAST, "--voice", voice or str(self.clip), "-o", output or str(self.out / "speech.wav"),
                        *args, input=input)


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("latent_cache")


@pytest.fixture
def cli(tts, tiny_model_dir, clip, cli_cache, tmp_path, monkeypatch) -> Cli:
    """The CLI on the tiny models. Loading the tiny folder on CPU in float32 returns the module's loaded models
    (the rows are about what happens after loading); any other folder, device or dtype loads for real."""
    real = TextToSpeech.from_local.__func__
    tiny = tiny_model_dir.resolve()

    def from_local(cls, model_dir, device="cpu", dtype=torch.float32, compile=False, *args, **kwargs):
        if Path(model_dir).resolve() == tiny and str(device) == "cpu" and dtype in (torch.float32, "float32") and not compile:
            return tts
        return real(cls, model_dir, device, dtype, compile, *args, **kwargs)

    monkeypatch.setattr(TextToSpeech, "from_local", classmethod(from_local))
    monkeypatch.setenv("TORTOISE_MODELS_DIR", str(tiny_model_dir))
    monkeypatch.setenv("TORTOISE_CLVP_CACHE", str(cli_cache))
    monkeypatch.delenv("TORTOISE_VOICES_DIR", raising=False)
    out, inputs = tmp_path / "out", tmp_path / "inputs"
    out.mkdir()
    inputs.mkdir()
    monkeypatch.chdir(out)
    return Cli(out, inputs, cli_cache, clip, tiny_model_dir)


# text ----------------------------------------------------------------------------------------------------------------
TEXT_API_ROWS = [
    pytest.param("", InputTextError, "empty", id="empty"),
    pytest.param(" \n\t  ", InputTextError, "empty", id="whitespace"),
    pytest.param("!!! ... ?! -- ;", InputTextError, "no letters or digits", id="punctuation-only"),
    pytest.param("🙂🎉🙂", InputTextError, "nothing speakable", id="emoji-only"),
    pytest.param("Hello \ud800 world", InputTextError, "invalid character", id="lone-surrogate"),
    pytest.param(TOO_LONG_TEXT, InputTextError, MAX_TEXT_TOKENS, id="too-long-for-the-model"),
    pytest.param("9" * 5000, InputTextError, "too long", id="number-too-long-to-spell"),
    pytest.param(None, TypeError, "must be a str", id="non-str-None"),
    pytest.param(b"Hello.", TypeError, "decode", id="non-str-bytes"),
    pytest.param(42, TypeError, "must be a str", id="non-str-int"),
]


@pytest.mark.parametrize("text, error, message", TEXT_API_ROWS)
def test_text_api(api, text, error, message):
    """A non-str is a TypeError by design (a programming error, not input); every str problem is InputTextError."""
    with pytest.raises(error, match=re.escape(message)):
        api.tts.generate(text, api.cond, _generation(), seed=0).save(api.out)
    assert _snapshot(api.out.parent) == {}


def _text_file(cli: Cli, data: bytes) -> str:
    return str(_bytes(cli.inputs / "text.txt", data))


TEXT_CLI_ROWS = [
    pytest.param(lambda c: c.speak(""), "empty", id="empty"),
    pytest.param(lambda c: c.speak(" \n\t  "), "empty", id="whitespace"),
    pytest.param(lambda c: c.speak(input=""), "empty", id="empty-stdin"),
    pytest.param(lambda c: c.speak("!!! ... ?! -- ;"), "no letters or digits", id="punctuation-only"),
    pytest.param(lambda c: c.speak("!!! " * 30), "nothing to speak", id="punctuation-only-long-text"),
    pytest.param(lambda c: c.speak("🙂🎉🙂"), "nothing speakable", id="emoji-only"),
    # what argv holds for bytes that are not valid UTF-8 (surrogateescape)
    pytest.param(lambda c: c.speak("Hello \udcff world"), "invalid character", id="lone-surrogate"),
    pytest.param(lambda c: c.speak("--text-file", _text_file(c, b"\xff\xfe bad \x80")), "cannot read --text-file",
                 id="text-file-not-utf8"),
    pytest.param(lambda c: c.speak("--text-file", str(c.inputs / "none.txt")), "cannot read --text-file",
                 id="text-file-missing"),
    pytest.param(lambda c: c.speak("Hello.", "--text-file", _text_file(c, b"Hi.")), "not both", id="text-twice"),
    pytest.param(lambda c: c.run("candidates", TOO_LONG_TEXT, "--voice", str(c.clip), "-n", "2", "--max-tokens", "8"),
                 MAX_TEXT_TOKENS, id="too-long-for-the-model-candidates"),
]


@pytest.mark.parametrize("invoke, message", TEXT_CLI_ROWS)
def test_text_cli(cli, invoke, message):
    _assert_cli_error(invoke(cli), message)
    assert _snapshot(cli.out) == {}
    _assert_cache_complete(cli.cache)


# voice clips ---------------------------------------------------------------------------------------------------------
def _nan_clip(folder: Path) -> Path:
    samples = _noise(2.0)
    samples[1000] = np.nan
    return _wav(folder / "nan.wav", samples)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


CLIP_API_ROWS = [
    pytest.param(lambda w: w / "missing.wav", AudioError, "not found", id="missing"),
    pytest.param(lambda w: _mkdir(w / "clips"), AudioError, "is a directory", id="directory"),
    pytest.param(lambda w: _bytes(w / "empty.wav", b""), AudioError, "cannot decode", id="empty-file"),
    pytest.param(lambda w: _bytes(w / "corrupt.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8),
                 AudioError, "cannot decode", id="corrupt-bytes"),
    pytest.param(lambda w: _wav(w / "silent.wav", np.zeros(2 * RATE)), AudioError, "silent", id="silent"),
    pytest.param(lambda w: _wav(w / "short.wav", _noise(0.5)), AudioError, "at least 1 s", id="shorter-than-1s"),
    pytest.param(_nan_clip, AudioError, "NaN", id="nan-samples"),
    pytest.param(lambda w: _bytes(w / "voice.mp3", b"\x00\x01garbage" * 64), AudioError, "use wav, flac or ogg",
                 id="unsupported-mp3"),
    pytest.param(lambda w: torch.rand(2, 3, 2 * RATE), AudioError, "expected mono", id="tensor-3d"),
    pytest.param(lambda w: torch.rand(2, 2 * RATE), AudioError, "expected mono", id="tensor-stereo"),
    pytest.param(lambda w: torch.ones(1, 2 * RATE, dtype=torch.int16), AudioError, "float", id="tensor-int16"),
    pytest.param(lambda w: torch.zeros(0), AudioError, "empty", id="tensor-empty"),
    pytest.param(lambda w: torch.full((2 * RATE,), float("nan")), AudioError, "NaN", id="tensor-nan"),
    pytest.param(lambda w: torch.zeros(2 * RATE), AudioError, "silent", id="tensor-silent"),
]


@pytest.mark.parametrize("make, error, message", CLIP_API_ROWS)
def test_clip_api(api, make, error, message):
    clip = make(api.work)
    with pytest.raises(error, match=re.escape(message)):
        api.tts.generate("Hello.", [clip], _generation(), seed=0).save(api.out)
    assert _snapshot(api.out.parent) == {}


def test_no_clips_api(api):
    with pytest.raises(AudioError, match="no voice clips"):
        api.tts.generate("Hello.", [], _generation(), seed=0).save(api.out)
    with pytest.raises(OptionsError, match="no diffusion latent"):
        api.tts.generate("Hello.", Conditioning(api.cond.autoregressive), _generation(), seed=0).save(api.out)
    assert _snapshot(api.out.parent) == {}


def _voice_folder(folder: Path, with_clip: Path | None = None) -> Path:
    voice = _mkdir(folder / "voice")
    _bytes(voice / "notes.txt", b"not audio")
    if with_clip is not None:
        shutil.copyfile(with_clip, voice / "clip.wav")
    return voice


CLIP_CLI_ROWS = [
    pytest.param(lambda c: c.speak("Hello.", voice=str(c.inputs / "missing.wav")), "not found", id="missing"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(_voice_folder(c.inputs))), "holds no", id="folder-without-clips"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(_bytes(c.inputs / "empty.wav", b""))), "cannot decode",
                 id="empty-file"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(_bytes(c.inputs / "bad.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "
                                                                  + bytes(range(256)) * 8))),
                 "cannot decode", id="corrupt-bytes"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(_wav(c.inputs / "silent.wav", np.zeros(2 * RATE)))), "silent",
                 id="silent"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(_wav(c.inputs / "short.wav", _noise(0.5, seed=1)))),
                 "at least 1 s", id="shorter-than-1s"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(_nan_clip(c.inputs))), "NaN", id="nan-samples"),
    pytest.param(lambda c: c.speak("Hello.", voice=str(shutil.copyfile(c.clip, c.inputs / "voice.mp3"))),
                 "must be .wav", id="unsupported-mp3"),
    pytest.param(lambda c: c.speak("Hello.", "--voice", str(_voice_folder(c.inputs, c.clip))), "must all be audio files",
                 id="clip-and-folder-mixed"),
    pytest.param(lambda c: c.speak("Hello.", voice="nobody_by_that_name"), "unknown voice", id="unknown-name"),
    pytest.param(lambda c: c.speak("Hello.", voice=f"random&{c.clip}"), "cannot be combined", id="random-combined"),
    pytest.param(lambda c: c.speak("Hello.", voice=f"{c.clip}&"), "empty part", id="empty-combination-part"),
    pytest.param(lambda c: c.speak("Hello.", "--voices-dir", str(c.inputs / "nope"), voice="alice"), "voices directory",
                 id="missing-voices-dir"),
    pytest.param(lambda c: c.run("latents", "random"), "no latents to precompute", id="latents-of-random"),
    pytest.param(lambda c: c.run("latents", str(_wav(c.inputs / "silent.wav", np.zeros(2 * RATE)))), "silent",
                 id="latents-of-silent-clip"),
]


@pytest.mark.parametrize("invoke, message", CLIP_CLI_ROWS)
def test_clip_cli(cli, invoke, message):
    _assert_cli_error(invoke(cli), message)
    assert _snapshot(cli.out) == {}
    _assert_cache_complete(cli.cache)


# checkpoints ---------------------------------------------------------------------------------------------------------
def _edit_state(file: Path, edit: Callable[[dict], None]) -> None:
    state = torch.load(file, map_location="cpu", weights_only=True)
    edit(state["model_g"] if "model_g" in state else state)
    file.unlink()
    torch.save(state, file)


def _edit_safetensors(file: Path, edit: Callable[[dict], None]) -> None:
    state = load_file(str(file))
    edit(state)
    file.unlink()
    save_file(state, str(file))


def _weight_key(state: dict, index: int = 3) -> str:
    return sorted(key for key in state if ".weight" in key and state[key].dim() >= 2)[index]


def _drop_key(state: dict) -> None:
    del state[_weight_key(state)]


def _add_key(state: dict) -> None:
    state["an_extra.weight"] = torch.zeros(2, 2)


def _misshape(state: dict) -> None:
    key = _weight_key(state)
    state[key] = torch.zeros(*(size + 1 for size in state[key].shape))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.unlink()
    file.write_bytes(data[: len(data) // 2])


def _replace(file: Path, data: bytes) -> None:
    file.unlink()
    file.write_bytes(data)


def _copy_over(source: Path, target: Path) -> None:
    target.unlink()
    shutil.copyfile(source, target)


def _torch_save(file: Path, obj: Any) -> None:
    file.unlink()
    torch.save(obj, file)


def _other_tokenizer(file: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    file.unlink()
    Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(file))


ORIGINAL_CHECKPOINT_ROWS = [  # damage to a folder of the original release's files
    pytest.param(lambda d: (d / "clvp2.pth").unlink(), "lacks clvp2.pth", id="missing-clvp2"),
    pytest.param(lambda d: (d / "autoregressive.pth").unlink(), "lacks autoregressive.pth", id="missing-autoregressive"),
    pytest.param(lambda d: _replace(d / "autoregressive.pth", b"\x00garbage" * 512), "corrupt or truncated",
                 id="garbage-autoregressive"),
    pytest.param(lambda d: _truncate(d / "clvp2.pth"), "corrupt or truncated", id="truncated-clvp2"),
    pytest.param(lambda d: _truncate(d / "diffusion_decoder.pth"), "corrupt or truncated", id="truncated-diffusion"),
    pytest.param(lambda d: _replace(d / "vocoder.pth", b""), "corrupt or truncated", id="empty-vocoder"),
    pytest.param(lambda d: _replace(d / "autoregressive.pth", b""), "corrupt or truncated", id="empty-autoregressive"),
    pytest.param(lambda d: _copy_over(d / "autoregressive.pth", d / "clvp2.pth"), "not a CLVP checkpoint",
                 id="wrong-slot-autoregressive-as-clvp2"),
    pytest.param(lambda d: _copy_over(d / "clvp2.pth", d / "autoregressive.pth"), "not an autoregressive checkpoint",
                 id="wrong-slot-clvp2-as-autoregressive"),
    pytest.param(lambda d: _copy_over(d / "vocoder.pth", d / "diffusion_decoder.pth"),
                 "not a diffusion decoder checkpoint", id="wrong-slot-vocoder-as-diffusion"),
    pytest.param(lambda d: _edit_state(d / "autoregressive.pth", _drop_key), "missing keys (1)",
                 id="key-removed-autoregressive"),
    pytest.param(lambda d: _edit_state(d / "vocoder.pth", _drop_key), "missing", id="key-removed-vocoder"),
    pytest.param(lambda d: _edit_state(d / "clvp2.pth", _add_key), "unexpected keys (1): an_extra.weight",
                 id="key-added-clvp2"),
    pytest.param(lambda d: _edit_state(d / "clvp2.pth", _misshape), "mis-shaped keys (1)", id="mis-shaped-clvp2"),
    pytest.param(lambda d: _edit_state(d / "autoregressive.pth", _misshape), "mis-shaped keys (1)",
                 id="mis-shaped-autoregressive"),
    pytest.param(lambda d: _torch_save(d / "autoregressive.pth", [1, 2, 3]), "does not hold a state dict",
                 id="not-a-state-dict"),
    pytest.param(lambda d: _torch_save(d / "clvp2.pth", argparse.Namespace(x=1)), "corrupt or truncated",
                 id="unsafe-pickle-refused"),
    pytest.param(lambda d: _replace(d / "tortoise_clvp.json", b"{'sizes':"), "as JSON", id="garbage-sizes-json"),
]
NATIVE_CHECKPOINT_ROWS = [  # damage to a native folder's weights
    pytest.param(lambda d: _replace(d / "vocoder.safetensors", b""), "corrupt", id="empty-vocoder"),
    pytest.param(lambda d: _truncate(d / "diffusion.safetensors"), "corrupt", id="truncated-diffusion"),
    pytest.param(lambda d: _copy_over(d / "vocoder.safetensors", d / "diffusion.safetensors"), "does not match",
                 id="wrong-slot-vocoder-as-diffusion"),
    pytest.param(lambda d: _edit_safetensors(d / "autoregressive.safetensors", _drop_key), "missing keys (1)",
                 id="key-removed-autoregressive"),
    pytest.param(lambda d: _edit_safetensors(d / "vocoder.safetensors", _drop_key), "missing", id="key-removed-vocoder"),
    pytest.param(lambda d: _edit_safetensors(d / "clvp.safetensors", _add_key), "unexpected keys (1): an_extra.weight",
                 id="key-added-clvp"),
    pytest.param(lambda d: _edit_safetensors(d / "clvp.safetensors", _misshape), "mis-shaped keys (1)",
                 id="mis-shaped-clvp"),
    pytest.param(lambda d: _edit_safetensors(d / "autoregressive.safetensors", _misshape), "mis-shaped keys (1)",
                 id="mis-shaped-autoregressive"),
]
ASSET_ROWS = [  # damage to Tortoise's data files, read the same way in every layout
    pytest.param(lambda d: _replace(d / "mel_norms.pth", b""), "re-download", id="empty-mel-norms"),
    pytest.param(lambda d: _replace(d / "mel_norms.pth", b"\x00garbage"), "mel norms", id="garbage-mel-norms"),
    pytest.param(lambda d: _torch_save(d / "mel_norms.pth", torch.ones(10)), "expected (80,)", id="mis-shaped-mel-norms"),
    pytest.param(lambda d: _replace(d / "tokenizer.json", b"{not json"), "tokenizer.json", id="garbage-tokenizer"),
    pytest.param(lambda d: _other_tokenizer(d / "tokenizer.json"), "not Tortoise's text vocabulary",
                 id="another-tokenizer"),
]
CHECKPOINT_ROWS = [
    pytest.param(source, *row.values, id=f"{layout}-{row.id}")
    for source, layout, rows in (
        ("reference_model_dir", "original", ORIGINAL_CHECKPOINT_ROWS),  # only the reference folder has original files
        ("tiny_model_dir", "native", NATIVE_CHECKPOINT_ROWS + ASSET_ROWS),
    )
    for row in rows
]


@pytest.fixture
def broken_copy(request, tmp_path) -> Callable[[str, Callable[[Path], None]], tuple[Path, dict[str, str]]]:
    """A copy of a model directory fixture (named) with one row's damage, and its snapshot after the damage."""

    def make(source: str, damage: Callable[[Path], None]) -> tuple[Path, dict[str, str]]:
        folder = tmp_path / "models"
        shutil.copytree(request.getfixturevalue(source), folder)
        damage(folder)
        return folder, _snapshot(folder)

    return make


@pytest.mark.parametrize("source, damage, message", CHECKPOINT_ROWS)
def test_checkpoint_api(broken_copy, source, damage, message):
    folder, before = broken_copy(source, damage)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        TextToSpeech.from_local(folder)
    _assert_unchanged(folder, before)


@pytest.mark.parametrize("source, damage, message", CHECKPOINT_ROWS)
def test_checkpoint_cli_convert(cli, broken_copy, source, damage, message):
    folder, before = broken_copy(source, damage)
    _assert_cli_error(cli.run("convert", folder, cli.out / "converted"), message)
    assert _snapshot(cli.out) == {}, "no destination and no staging folder may be left"
    _assert_unchanged(folder, before)


# model directories ---------------------------------------------------------------------------------------------------
def _copied(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _native_edit(name: str, edit: Callable[[Path], None]) -> Callable[[Path, Path, dict], Path]:
    def make(work: Path, tiny: Path, natives: dict) -> Path:
        folder = _copied(natives["valid"], work / name)
        edit(folder)
        return folder

    return make


def _tiny_without(name: str) -> Callable[[Path, Path, dict], Path]:
    def make(work: Path, tiny: Path, natives: dict) -> Path:
        folder = _copied(tiny, work / "models")
        (folder / name).unlink()
        return folder

    return make


def _edit_json(file: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads(file.read_text())
    edit(meta)
    file.write_text(json.dumps(meta))


def _hf_dir(work: Path, tiny: Path, config: bytes) -> Path:
    """A Hugging Face layout folder (with Tortoise's two data files) whose config or weights are broken."""
    folder = _mkdir(work / "hf")
    for name in ("tokenizer.json", "mel_norms.pth"):
        shutil.copyfile(tiny / name, folder / name)
    _bytes(folder / "config.json", config)
    _bytes(folder / "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    return folder


MODEL_DIR_ROWS = [
    pytest.param(lambda w, t, n: w / "missing", "does not exist", id="missing"),
    pytest.param(lambda w, t, n: _bytes(w / "models.txt", b"a file"), "models.txt", id="a-file-not-a-folder"),
    pytest.param(lambda w, t, n: _mkdir(w / "empty"), "holds no model", id="empty"),
    pytest.param(lambda w, t, n: _bytes(_mkdir(w / "other") / "model.ckpt", b"x").parent, "holds no model",
                 id="unrelated-files"),
    pytest.param(_tiny_without("tokenizer.json"), "lacks tokenizer.json", id="missing-tokenizer"),
    pytest.param(_tiny_without("mel_norms.pth"), "lacks mel_norms.pth", id="missing-mel-norms"),
    pytest.param(_native_edit("n", lambda d: _replace(d / "clvp.safetensors", b"not safetensors at all")), "corrupt",
                 id="native-corrupt-safetensors"),
    pytest.param(_native_edit("n", lambda d: _truncate(d / "autoregressive.safetensors")), "corrupt",
                 id="native-truncated-safetensors"),
    pytest.param(_native_edit("n", lambda d: (d / "clvp.safetensors").unlink()), "clvp.safetensors",
                 id="native-missing-part"),
    pytest.param(_native_edit("n", lambda d: _copy_over(d / "clvp.safetensors", d / "autoregressive.safetensors")),
                 "does not match", id="native-part-swapped"),
    pytest.param(_native_edit("n", lambda d: _edit_json(d / native.CONFIG_FILE, lambda m: m.update(version=99))),
                 "version 99", id="native-newer-format"),
    pytest.param(_native_edit("n", lambda d: _edit_json(d / native.CONFIG_FILE, lambda m: m.pop("clvp"))),
                 "no valid clvp config", id="native-config-without-part"),
    pytest.param(_native_edit("n", lambda d: _replace(d / native.CONFIG_FILE, b"\xff\x00")), "convert the model again",
                 id="native-config-garbage"),
    pytest.param(lambda w, t, n: n["wide_latents"], f"{WIDE_LATENTS}-wide latents", id="native-parts-of-mismatched-width"),
    pytest.param(lambda w, t, n: n["band_mismatch"], f"{NARROW_MELS}-band mels", id="native-parts-of-mismatched-mels"),
    pytest.param(lambda w, t, n: _hf_dir(w, t, b"{garbage"), "as JSON", id="huggingface-config-garbage"),
    pytest.param(lambda w, t, n: _hf_dir(w, t, b'{"model_type": "clvp"}'), "model.safetensors",
                 id="huggingface-weights-garbage"),
]


def test_small_native_dir_loads(native_dirs):
    """Baseline for the native rows: the undamaged directory loads, so each failure comes from its damage."""
    tts = TextToSpeech.from_local(native_dirs["valid"])
    assert tts.models.layout == "native" and tts.models.diffusion is not None and tts.models.vocoder is not None


@pytest.mark.parametrize("make, message", MODEL_DIR_ROWS)
def test_model_dir_api(api, tiny_model_dir, native_dirs, make, message):
    folder = make(api.work, tiny_model_dir, native_dirs)
    before = _snapshot(folder)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        TextToSpeech.from_local(folder)
    _assert_unchanged(folder, before)


@pytest.mark.parametrize("make, message", MODEL_DIR_ROWS)
def test_model_dir_cli(cli, tiny_model_dir, native_dirs, make, message):
    folder = make(cli.inputs, tiny_model_dir, native_dirs)
    before = _snapshot(folder)
    _assert_cli_error(cli.speak("Hello.", "--models-dir", folder), message)
    _assert_cli_error(cli.run("convert", folder, cli.out / "converted"), message)
    assert _snapshot(cli.out) == {}, "neither audio nor a converted directory may be left"
    _assert_unchanged(folder, before)


# options -------------------------------------------------------------------------------------------------------------
def _sampling(**fields: Any) -> GenerationOptions:
    return GenerationOptions(DecodingOptions(sampling=SamplingOptions(**fields), num_candidates=2, batch_size=2,
                                             max_new_tokens=16), SamplerOptions(sampler="dpm++2m", steps=2))


def _diffusion(**fields: Any) -> GenerationOptions:
    return GenerationOptions(DecodingOptions(num_candidates=2, batch_size=2, max_new_tokens=16), SamplerOptions(**fields))


OPTION_API_ROWS = [
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, "warp_speed"), OptionsError, "unknown preset",
                 id="unknown-preset"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(num_candidates=0)), OptionsError,
                 "num_candidates", id="zero-candidates"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(num_candidates=-3)), OptionsError,
                 "num_candidates", id="negative-candidates"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(batch_size=0)), OptionsError, "batch_size",
                 id="zero-batch-size"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _sampling(top_p=0)), OptionsError, "top_p", id="top_p-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _sampling(top_p=1.5)), OptionsError, "top_p",
                 id="top_p-above-1"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _sampling(temperature=0)), OptionsError, "temperature",
                 id="temperature-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _sampling(temperature=float("nan"))), OptionsError,
                 "temperature", id="temperature-nan"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _sampling(top_k=0)), OptionsError, "top_k", id="top_k-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _sampling(repetition_penalty=0)), OptionsError,
                 "repetition_penalty", id="repetition-penalty-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _diffusion(sampler="euler")), OptionsError,
                 "unknown diffusion sampler", id="unknown-sampler"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _diffusion(steps=0)), OptionsError, "steps", id="steps-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _diffusion(steps=5000)), OptionsError, "steps",
                 id="steps-above-trained"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _diffusion(steps=2.5)), OptionsError, "integer",
                 id="steps-fractional"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _diffusion(temperature=-1.0)), OptionsError,
                 "temperature", id="diffusion-temperature-negative"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(k=3)), OptionsError, "k=3",
                 id="k-larger-than-candidates"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(k=0)), OptionsError, "k must be >= 1",
                 id="k-0"),
    pytest.param(lambda a: a.tts.candidates("Hello.", a.cond, DecodingOptions(num_candidates=2, batch_size=2), k=5),
                 OptionsError, "k=5", id="candidates-k-larger-than-candidates"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(max_new_tokens=1000)), OptionsError,
                 MAX_NEW_TOKENS, id="max-new-tokens-beyond-model"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(max_new_tokens=0)), OptionsError,
                 "max_new_tokens", id="max-new-tokens-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(min_new_tokens=20)), OptionsError,
                 "min_new_tokens", id="min-above-max-tokens"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(mel_positions="shifted")), OptionsError,
                 "mel_positions", id="unknown-mel-positions"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, GenerationOptions(clvp_batch_size=0)), OptionsError,
                 "clvp_batch_size", id="clvp-batch-size-0"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, DecodingOptions(num_candidates=2, batch_size=2)),
                 OptionsError, "GenerationOptions", id="generate-given-DecodingOptions"),
    pytest.param(lambda a: a.tts.candidates("Hello.", a.cond, _generation()), OptionsError, "DecodingOptions",
                 id="candidates-given-GenerationOptions"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(), seed=2**70), OptionsError, "seed",
                 id="seed-too-large"),
    pytest.param(lambda a: a.tts.generate("Hello.", a.cond, _generation(max_new_tokens=4), seed=2**64 - 1), OptionsError,
                 "seed",
                 id="seed-at-the-64-bit-limit"),
    pytest.param(lambda a: TextToSpeech.from_local(a.model_dir, dtype=torch.int8), TortoiseClvpError, "dtype",
                 id="dtype-int8"),
    pytest.param(lambda a: TextToSpeech.from_local(a.model_dir, device="warp_drive"), CheckpointError,
                 "cannot place the models on warp_drive", id="unknown-device"),
]


@pytest.mark.parametrize("call, error, message", OPTION_API_ROWS)
def test_options_api(api, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        result = call(api)
        if isinstance(result, Speech):
            result.save(api.out)
    assert _snapshot(api.out.parent) == {}


OPTION_CLI_ROWS = [
    pytest.param(lambda c: c.speak("Hello.", "--preset", "warp_speed"), "unknown preset", id="unknown-preset"),
    pytest.param(lambda c: c.speak("Hello.", "--candidates", "0"), Usage("--candidates"), id="zero-candidates"),
    pytest.param(lambda c: c.speak("Hello.", "--candidates", "-3"), Usage("--candidates"), id="negative-candidates"),
    pytest.param(lambda c: c.speak("Hello.", "--sampler", "euler"), "unknown diffusion sampler", id="unknown-sampler"),
    pytest.param(lambda c: c.speak("Hello.", "--steps", "0"), Usage("--steps"), id="steps-0"),
    pytest.param(lambda c: c.speak("Hello.", "--steps", "5000"), "steps", id="steps-above-trained"),
    pytest.param(lambda c: c.speak("Hello.", "--keep", "3"), "k=3", id="keep-more-than-candidates"),
    pytest.param(lambda c: c.speak("Hello.", "--keep", "0"), Usage("--keep"), id="keep-0"),
    pytest.param(lambda c: c.speak(LONG_TEXT, "--keep", "2"), "fits one chunk", id="keep-2-for-long-text"),
    pytest.param(lambda c: c.speak("Hello.", "--max-tokens", "1000"), MAX_NEW_TOKENS,
                 id="max-tokens-beyond-model"),
    pytest.param(lambda c: c.speak("Hello.", "--max-tokens", "0"), Usage("--max-tokens"), id="max-tokens-0"),
    pytest.param(lambda c: c.speak("Hello.", "--chunk-chars", "5"), Usage("--chunk-chars"), id="chunk-chars-5"),
    pytest.param(lambda c: c.speak("Hello.", "--dtype", "int8"), "--dtype", id="dtype-int8"),
    pytest.param(lambda c: c.speak("Hello.", "--device", "warp_drive"), "cannot place the models", id="unknown-device"),
    pytest.param(lambda c: c.speak("Hello.", "--seed", str(2**70)), Usage("--seed"), id="seed-too-large"),
    pytest.param(lambda c: c.speak("Hello.", "--seed", str(2**64 - 1), "--max-tokens", "4"), Usage("--seed"),
                 id="seed-at-the-64-bit-limit"),
    pytest.param(lambda c: c.run("candidates", "Hello.", "--voice", c.clip, "-n", "2", "--keep", "5"), "k=5",
                 id="candidates-keep-more-than-candidates"),
    pytest.param(lambda c: c.run("candidates", "Hello.", "--voice", c.clip, "-n", "2", "--max-tokens", "1000"),
                 MAX_NEW_TOKENS, id="candidates-max-tokens-beyond-model"),
    pytest.param(lambda c: c.run("bench", "rerank", c.inputs / "m.jsonl", "--out", c.out / "report", "--candidates",
                                 "two"), "--candidates must be comma-separated integers", id="bench-candidates-not-int"),
    pytest.param(lambda c: c.run("bench", "rerank", c.inputs / "m.jsonl", "--out", c.out / "report", "--seeds", "1,1"),
                 "seeds must differ", id="bench-repeated-seeds"),
    pytest.param(lambda c: c.run("bench", "rerank", c.inputs / "m.jsonl", "--out", c.out / "report", "--candidates",
                                 "0"), "candidate counts must be", id="bench-zero-candidates"),
]


@pytest.mark.parametrize("invoke, message", OPTION_CLI_ROWS)
def test_options_cli(cli, invoke, message):
    _assert_cli_error(invoke(cli), message)
    assert not [p for p in cli.out.rglob("*") if p.is_file() or p.name.startswith(".")], sorted(cli.out.rglob("*"))
    _assert_cache_complete(cli.cache)


@pytest.mark.parametrize("max_new_tokens", [1, 2])
def test_smallest_token_budget_api(api, max_new_tokens):
    """DecodingOptions accepts any max_new_tokens >= 1: the smallest ones must either work or be refused clearly."""
    try:
        speech = api.tts.generate("Hello.", api.cond, _generation(max_new_tokens=max_new_tokens), seed=0)
    except OptionsError as error:
        assert "max_new_tokens" in str(error)
        assert _snapshot(api.out.parent) == {}
    else:
        speech.save(api.out)
        assert soundfile.info(str(api.out)).frames > 0


def test_smallest_token_budget_cli(cli):
    result = cli.speak("Hello.", "--max-tokens", "1")
    if result.exit_code == 0:
        assert soundfile.info(str(cli.out / "speech.wav")).frames > 0
    else:
        _assert_cli_error(result, "max_new_tokens")
        assert _snapshot(cli.out) == {}


# output paths --------------------------------------------------------------------------------------------------------
def _taken(path: Path, data: bytes = b"precious") -> None:
    path.write_bytes(data)


OUTPUT_CLI_ROWS = [
    pytest.param(lambda o, m: None, lambda c: c.speak("Hello.", output=str(c.out / "nope" / "x.wav")), "does not exist",
                 id="missing-folder"),
    pytest.param(lambda o, m: None, lambda c: c.speak("Hello.", output=str(c.out / "x.mp3")), "must end in",
                 id="bad-suffix"),
    pytest.param(lambda o, m: None, lambda c: c.speak("Hello.", output=str(c.out / "speech")), "must end in",
                 id="no-suffix"),
    pytest.param(lambda o, m: _taken(o / "speech.wav"), lambda c: c.speak("Hello."), "already exist",
                 id="existing-file-without-overwrite"),
    pytest.param(lambda o, m: _taken(o / "speech_2.wav"), lambda c: c.speak("Hello.", "--keep", "2"), "already exist",
                 id="existing-second-file-without-overwrite"),
    pytest.param(lambda o, m: _mkdir(o / "speech.wav"), lambda c: c.speak("Hello."), "already exist",
                 id="folder-as-output"),
    # the failure comes at the save, after generation on the tiny models
    pytest.param(lambda o, m: _mkdir(o / "speech.wav"),
                 lambda c: c.speak("Hello.", "--overwrite"), "is a directory", id="folder-as-output-with-overwrite"),
    pytest.param(lambda o, m: None, lambda c: c.speak("Hello.", "--keep", "2", output="-"), "--keep needs an output file",
                 id="stdout-with-keep"),
    pytest.param(lambda o, m: _taken(o / "work"), lambda c: c.speak(LONG_TEXT, "--work-dir", c.out / "work"),
                 "is a file", id="work-dir-is-a-file"),
    pytest.param(lambda o, m: _mkdir(o / "converted"), lambda c: c.run("convert", c.model_dir, c.out / "converted"),
                 "already exists", id="convert-destination-exists"),
    pytest.param(lambda o, m: None, lambda c: c.run("convert", c.model_dir, c.out / "nope" / "converted"),
                 "does not exist", id="convert-destination-folder-missing"),
]


@pytest.mark.parametrize("prepare, invoke, message", OUTPUT_CLI_ROWS)
def test_output_cli(cli, monkeypatch, prepare, invoke, message):
    prepare(cli.out, monkeypatch)
    before = _snapshot(cli.out)
    _assert_cli_error(invoke(cli), message)
    assert _without_resume_folder(cli.out, _snapshot(cli.out)) == before
    _assert_cache_complete(cli.cache)


def _fail_writes(monkeypatch, error: BaseException) -> None:
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(soundfile, "write", broken)


OUTPUT_API_ROWS = [
    pytest.param(lambda o, m: o / "nope" / "x.wav", AudioError, "does not exist", id="missing-folder"),
    pytest.param(lambda o, m: o / "x.mp3", AudioError, "unknown suffix", id="bad-suffix"),
    pytest.param(lambda o, m: o / "speech", AudioError, "unknown suffix", id="no-suffix"),
    pytest.param(lambda o, m: _mkdir(o / "speech.wav"), AudioError, "is a directory", id="folder-as-output"),
    pytest.param(lambda o, m: _taken(o / "speech.wav") or _fail_writes(m, OSError(28, "No space left on device"))
                 or o / "speech.wav", AudioError, "nothing was written", id="disk-full-over-existing-file"),
    pytest.param(lambda o, m: _taken(o / "speech.wav") or _fail_writes(m, KeyboardInterrupt()) or o / "speech.wav",
                 KeyboardInterrupt, "", id="interrupted-over-existing-file"),
]


@pytest.mark.parametrize("prepare, error, message", OUTPUT_API_ROWS)
def test_output_api(api, speech, monkeypatch, prepare, error, message):
    folder = api.out.parent
    path = prepare(folder, monkeypatch)
    before = _snapshot(folder)
    with pytest.raises(error, match=re.escape(message) if message else None):
        speech.save(path)
    _assert_unchanged(folder, before)


def _fail_native_writes(monkeypatch, error: BaseException) -> None:
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(native, "save_file", broken)


CONVERT_API_ROWS = [
    pytest.param(lambda o, m: _taken(_mkdir(o / "converted") / "mine.txt", b"mine") or (o / "converted", False),
                 CheckpointError, "already exists", id="destination-exists"),
    pytest.param(lambda o, m: (o / "nope" / "converted", False), CheckpointError, "does not exist",
                 id="destination-folder-missing"),
    pytest.param(lambda o, m: _fail_native_writes(m, OSError(28, "No space left on device")) or (o / "converted", False),
                 CheckpointError, "cannot write", id="disk-full"),
    pytest.param(lambda o, m: _taken(_mkdir(o / "converted") / "mine.txt", b"mine")
                 or _fail_native_writes(m, OSError(28, "No space left on device")) or (o / "converted", True),
                 CheckpointError, "cannot write", id="disk-full-while-overwriting"),
    pytest.param(lambda o, m: _fail_native_writes(m, KeyboardInterrupt()) or (o / "converted", False),
                 KeyboardInterrupt, "", id="interrupted"),
]


@pytest.mark.parametrize("prepare, error, message", CONVERT_API_ROWS)
def test_convert_destination_api(api, native_dirs, monkeypatch, prepare, error, message):
    folder = api.out.parent
    destination, overwrite = prepare(folder, monkeypatch)
    before = _snapshot(folder)
    with pytest.raises(error, match=re.escape(message) if message else None):
        convert(native_dirs["valid"], destination, overwrite=overwrite)
    _assert_unchanged(folder, before)


# rerank manifests ----------------------------------------------------------------------------------------------------
def _line(**entry: Any) -> str:
    return json.dumps({"text": "Hello there.", "voice": "clip.wav", "options": {"max_new_tokens": 8}, **entry})


MANIFEST_ROWS = [
    pytest.param(_line() + "\n{\"text\": \"Hi\", voice}\n", OptionsError, "m.jsonl:2: invalid JSON", id="invalid-json-line"),
    pytest.param("[1, 2]\n", OptionsError, "must be a JSON object", id="not-an-object"),
    pytest.param(json.dumps({"voice": "clip.wav"}), OptionsError, "missing 'text'", id="missing-text"),
    pytest.param(json.dumps({"text": "Hi."}), OptionsError, "missing 'voice'", id="missing-voice"),
    pytest.param(_line(speaker="bob"), OptionsError, "unknown key(s) 'speaker'", id="unknown-entry-key"),
    pytest.param(_line(options={"beam_size": 4}), OptionsError, "unknown option 'beam_size'", id="unknown-option-key"),
    pytest.param(_line(options={"sampling": {"beam_size": 4}}), OptionsError, "unknown sampling option 'beam_size'",
                 id="unknown-sampling-option-key"),
    pytest.param(_line(options={"max_new_tokens": "ten"}), OptionsError, "'max_new_tokens' must be int",
                 id="option-of-wrong-type"),
    pytest.param(_line(options={"top_p": 0}), OptionsError, "top_p", id="option-out-of-range"),
    pytest.param(_line(options={"max_new_tokens": 1000}), OptionsError, MAX_NEW_TOKENS,
                 id="max-new-tokens-beyond-model"),
    pytest.param("", OptionsError, "has no entries", id="empty"),
    pytest.param("\n  \n\n", OptionsError, "has no entries", id="blank-lines-only"),
    pytest.param(None, OptionsError, "not found", id="manifest-missing"),
    pytest.param(b"\xff\xfe{}", OptionsError, "cannot read manifest", id="not-utf8"),
    pytest.param(_line(id="a") + "\n" + _line(id="a"), OptionsError, "already used", id="duplicate-id"),
    pytest.param(_line(text=""), InputTextError, "non-empty string", id="empty-text"),
    pytest.param(_line(text="?!?! ..."), InputTextError, "no letters or digits", id="punctuation-only-text"),
    pytest.param(_line(text=TOO_LONG_TEXT), InputTextError, MAX_TEXT_TOKENS, id="text-too-long"),
    pytest.param(_line(voice="nobody.wav"), AudioError, "not found", id="voice-missing"),
    pytest.param(_line(voice=[]), OptionsError, "'voice' must be", id="voice-empty-list"),
    pytest.param(_line(voice="silent.wav"), AudioError, "silent", id="voice-silent"),
    pytest.param(_line(voice="short.wav"), AudioError, "at least 1 s", id="voice-too-short"),
]


def _manifest(folder: Path, clip: Path, content: str | bytes | None) -> Path:
    shutil.copyfile(clip, folder / "clip.wav")
    _wav(folder / "silent.wav", np.zeros(2 * RATE))
    _wav(folder / "short.wav", _noise(0.5))
    path = folder / "m.jsonl"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _assert_no_report(out: Path) -> None:
    """The report folder may exist (created before sampling) but holds nothing: no report, plot or temp file."""
    assert not [p for p in out.rglob("*") if p.is_file() or p.name.startswith(".")], sorted(out.rglob("*"))


@pytest.mark.parametrize("content, error, message", MANIFEST_ROWS)
def test_manifest_api(api, content, error, message):
    manifest = _manifest(api.work, api.clip, content)
    with pytest.raises(error, match=re.escape(message)):
        run_rerank_benchmark(api.tts, manifest, api.out.parent / "report", candidates=(2,), seeds=(0,))
    _assert_no_report(api.out.parent)


@pytest.mark.parametrize("kwargs, message", [
    pytest.param({"candidates": (0,)}, "candidate counts", id="zero-candidates"),
    pytest.param({"seeds": (1, 1)}, "seeds must differ", id="repeated-seeds"),
    pytest.param({"seeds": (-1,)}, "seeds must be integers >= 0", id="negative-seed"),
    pytest.param({"clvp_batch_size": 0}, "clvp_batch_size", id="clvp-batch-size-0"),
])
def test_manifest_run_options_api(api, kwargs, message):
    manifest = _manifest(api.work, api.clip, _line())
    with pytest.raises(OptionsError, match=re.escape(message)):
        run_rerank_benchmark(api.tts, manifest, api.out.parent / "report", **{"candidates": (2,), "seeds": (0,), **kwargs})
    _assert_no_report(api.out.parent)


MANIFEST_CLI_ROWS = [row for row in MANIFEST_ROWS if row.id in {
    "invalid-json-line", "unknown-option-key", "empty", "manifest-missing", "punctuation-only-text", "voice-silent",
}]


@pytest.mark.parametrize("content, error, message", MANIFEST_CLI_ROWS)
def test_manifest_cli(cli, content, error, message):
    manifest = _manifest(cli.inputs, cli.clip, content)
    result = cli.run("bench", "rerank", manifest, "--out", cli.out / "report", "--candidates", "2", "--seeds", "0",
                     "--quiet")
    _assert_cli_error(result, message)
    _assert_no_report(cli.out)


# Ctrl-C ----------------------------------------------------------------------------------------------------------------
def _interrupt(monkeypatch, owner: Any, name: str) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, interrupted)


def _interrupt_cache_write(monkeypatch) -> None:
    from tortoise_clvp import voices

    _interrupt(monkeypatch, voices, "write_bytes_atomic")


def _fresh_clip(c: Cli) -> str:
    """A clip no other row used, so its latents are computed (and cached) in this run."""
    return str(_wav(c.inputs / "fresh.wav", _noise(2.0, seed=7)))


INTERRUPT_ROWS = [
    pytest.param(lambda m: _interrupt(m, TextToSpeech, "generate"), lambda o: None,
                 lambda c: c.speak("Hello."), id="speak-during-generation"),
    pytest.param(lambda m: _interrupt(m, TextToSpeech, "generate"), lambda o: _taken(o / "speech.wav"),
                 lambda c: c.speak("Hello.", "--overwrite"), id="speak-during-generation-over-existing-file"),
    pytest.param(lambda m: _interrupt(m, TextToSpeech, "generate"), lambda o: None,
                 lambda c: c.speak("Hello.", "--stream"), id="speak-stream-during-generation"),
    pytest.param(lambda m: _interrupt(m, soundfile, "write"), lambda o: _taken(o / "speech.wav"),
                 lambda c: c.speak("Hello.", "--overwrite"), id="speak-while-writing-audio"),
    pytest.param(lambda m: _interrupt(m, TextToSpeech, "get_conditioning"), lambda o: None,
                 lambda c: c.speak("Hello.", voice=_fresh_clip(c)), id="speak-during-conditioning"),
    pytest.param(_interrupt_cache_write, lambda o: None,
                 lambda c: c.speak("Hello.", voice=_fresh_clip(c)), id="speak-while-caching-latents"),
    pytest.param(_interrupt_cache_write, lambda o: None, lambda c: c.run("latents", _fresh_clip(c)),
                 id="latents-while-caching"),
    pytest.param(lambda m: _interrupt(m, TextToSpeech, "candidates"), lambda o: None,
                 lambda c: c.run("candidates", "Hello.", "--voice", c.clip, "-n", "2"), id="candidates-command"),
    pytest.param(lambda m: _interrupt(m, native, "save_file"), lambda o: None,
                 lambda c: c.run("convert", c.model_dir, c.out / "converted"), id="convert-while-writing"),
    pytest.param(lambda m: _interrupt(m, TextToSpeech, "candidates"), lambda o: None,
                 lambda c: c.run("bench", "rerank", _manifest(c.inputs, c.clip, _line()), "--out", c.out / "report",
                                 "--candidates", "2", "--seeds", "0", "--quiet"), id="bench-rerank-during-sampling"),
]


@pytest.mark.parametrize("patch, prepare, invoke", INTERRUPT_ROWS)
def test_ctrl_c(cli, monkeypatch, patch, prepare, invoke):
    prepare(cli.out)
    before = _snapshot(cli.out)
    patch(monkeypatch)
    result = invoke(cli)
    _assert_cli_error(result, "interrupted", code=130)
    after = _without_resume_folder(cli.out, _snapshot(cli.out))
    if after.get("report") == "<dir>":  # the bench creates its (still empty) report folder before sampling
        after.pop("report")
    assert after == before, f"partial output left: {sorted(set(after) ^ set(before))}"
    _assert_cache_complete(cli.cache)


# the text front end under any unicode string ---------------------------------------------------------------------------
_ANY_TEXT = st.one_of(
    st.text(),
    st.text(st.characters(exclude_categories=())),  # every code point, lone surrogates included
    st.text(st.sampled_from("ab cd 0123456789 .,!?'\"$%-\ud800\udfff🙂é"), max_size=400),
    st.lists(st.sampled_from(["hello", "world", "42", "Dr.", "$3.50", "1st", "...", "🙂", " ", "\n"]), max_size=80)
    .map(" ".join),
)


@settings(max_examples=200, deadline=None)
@given(text=_ANY_TEXT)
def test_any_text_tokenizes_within_limits_or_raises_input_text_error(tts, text):
    model = tts.models.autoregressive
    try:
        ids = tts.tokenize(text)
    except InputTextError:
        return
    assert isinstance(ids, torch.Tensor) and ids.dim() == 1 and ids.dtype == torch.long
    assert ids.numel() >= 2 and int(ids[-1]) == TOKENS.text_stop
    assert bool(((ids >= 0) & (ids < tts.models.tokenizer.vocab_size)).all()), ids
    try:
        check_lengths(model, ids, DecodingOptions(num_candidates=1, batch_size=1, max_new_tokens=8))
    except InputTextError as error:
        assert ids.numel() > model.config.max_text_tokens and "at most" in str(error)
    else:
        assert ids.numel() <= model.config.max_text_tokens
