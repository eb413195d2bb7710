"""Shared fixtures: tiny seeded models and synthesized clips for product tests, the reference folder for parity tests.

Product tests (API, CLI, voices, long text, reliability) run on what the tests make themselves: `tiny_model_dir`, a
native model directory of seeded random tiny models with a tokenizer trained here, and `speech_clips`, synthesized
speech-like clips in several formats. They never read the reference folder.

Parity tests compare with the original Tortoise through the golden reference folder, `reference_dir`: it comes from
`CLVP_REFERENCE_DIR` (default `../shared/reference` beside the repo). Tests read every size, case list and file name
from its JSON, so any folder of the same layout (other seeds, other tiny configs) passes. Without the folder every
parity test skips with the one reason `REFERENCE_MISSING`.
"""

from __future__ import annotations

import os
import sys

# before anything imports huggingface_hub or transformers: no test may reach the network
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# before torch starts its OpenMP threads: idle threads sleep instead of spinning. On a 2-core machine busy with other
# work, spinning threads made the tiny models' decode steps ~30x slower (tests/test_decoding.py: 5 min -> 50 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tortoise_clvp.config import (  # noqa: E402
    TOKENS,
    AutoregressiveConfig,
    ClvpConfig,
    DiffusionConfig,
    VocoderConfig,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_VOICES = REPO_ROOT / "voices"
REFERENCE_MISSING = "golden reference folder not found (set CLVP_REFERENCE_DIR to it): parity tests skipped"
SEED = 1234

# Tiny sizes for product tests. The decoder's text and token limits are generous so ordinary sentences fit.
TINY_DIM = 32
TINY_CONFIGS = {
    "autoregressive": AutoregressiveConfig(layers=2, model_dim=TINY_DIM, heads=2, max_text_tokens=200,
                                           max_mel_tokens=250, conditioning_attn_blocks=2),
    "clvp": ClvpConfig(dim_text=32, dim_speech=32, dim_latent=32, text_enc_depth=1, text_heads=2, speech_enc_depth=1,
                       speech_heads=2, dim_head=16, rotary_dim=8),
    "diffusion": DiffusionConfig(model_channels=32, num_layers=1, num_heads=2, in_latent_channels=TINY_DIM),
    "vocoder": VocoderConfig(noise_dim=8, channel_size=8, dilations=(1,), kpnet_hidden_channels=8),
}
TINY_STOP_BIAS = 3.0  # raised stop-token logit: candidates of the random decoder stop after 0 to 200+ tokens
TOKENIZER_VOCAB = 120
TOKENIZER_SENTENCES = (
    "Hello, this is a test.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "How are you today? Fine, thanks.",
    "Good morning, and welcome to the show.",
    "It was the best of times, it was the worst of times.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "The rainbow is a division of white light into many beautiful colors.",
    "These take the shape of a long round arch, with its path high above.",
    "This is the first sentence of the text. And here comes the second one.",
    "Numbers like 42 and 1999 are read out as words.",
    "Mr. Smith went to Washington on the third of May.",
    "Is it raining? No, the sky is clear and blue.",
    "A journey of a thousand miles begins with a single step.",
    "All that glitters is not gold; all who wander are not lost.",
    "Speech synthesis turns written text into spoken words.",
    "The decoder samples many candidates, and the scorer picks the best ones.",
    "Then the diffusion model draws a spectrogram and the vocoder makes a waveform.",
    "Pick the best three.",
    "Stream raw audio to the speaker.",
    "Long texts are split at sentence boundaries, with quotes kept whole.",
    "\"Quoted words stay together,\" she said, 'even with commas.'",
    "Why do birds suddenly appear every time you are near?",
    "One, two, three, four: counting is easy.",
    "Every cloud has a silver lining, or so they say.",
    "Voices are made from short clips of someone speaking.",
    "Good night, and good luck!",
)


def _reference_dir() -> Path:
    return Path(os.environ.get("CLVP_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference")).resolve()


def reference_available() -> bool:
    """Whether the golden reference folder is there (its README marks a complete folder)."""
    return (_reference_dir() / "README.md").is_file()


def require_reference() -> Path:
    """The reference folder, or skip the calling test with the one shared reason."""
    if not reference_available():
        pytest.skip(REFERENCE_MISSING)
    return _reference_dir()


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `cuda` skip where no CUDA device exists."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Report every reference-folder skip at one place, so `pytest -ra` folds them into one line."""
    outcome = yield
    report = outcome.get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and REFERENCE_MISSING in str(longrepr[2]):
        report.longrepr = (__file__, require_reference.__code__.co_firstlineno, longrepr[2])


@pytest.fixture
def without_matplotlib(monkeypatch):
    """Make matplotlib unimportable for one test, as if it were not installed. Every matplotlib module already
    imported in this process is hidden too: `from matplotlib.figure import ...` would otherwise still succeed and then
    fail halfway through drawing, depending on which tests ran before in the same worker."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


# reference folder (parity tests only) --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def audio_cases(reference_dir: Path) -> dict:
    return read_json(reference_dir / "audio_cases.json")


@pytest.fixture(scope="session")
def audio_tensors(reference_dir: Path) -> dict[str, torch.Tensor]:
    return read_tensors(reference_dir / "audio_cases.safetensors")


@pytest.fixture(scope="session")
def ar_fixture(reference_dir: Path):
    """(model, cases, config.json) for the tiny original autoregressive checkpoint, loaded through our loader."""
    from tortoise_clvp.weights.original_autoregressive import (
        autoregressive_config_from_original_kwargs,
        load_autoregressive_original,
    )

    folder = reference_dir / "models" / "ar_tiny"
    meta = read_json(folder / "config.json")
    model = load_autoregressive_original(folder / "autoregressive.pth", autoregressive_config_from_original_kwargs(meta["kwargs"]))
    return model.eval(), read_tensors(folder / "cases.safetensors"), meta


@pytest.fixture(scope="session")
def reference_model_dir(reference_dir: Path, tmp_path_factory) -> Path:
    """An original-layout model directory made of the reference folder's tiny original checkpoints, with the sizes
    shapes can't tell (for tests of the original-format loaders and the whole original chain)."""
    from tortoise_clvp.weights.original_autoregressive import autoregressive_config_from_original_kwargs
    from tortoise_clvp.weights.original_clvp import clvp_config_from_original_kwargs

    folder = tmp_path_factory.mktemp("reference_tortoise")
    models = reference_dir / "models"
    shutil.copyfile(models / "ar_tiny" / "autoregressive.pth", folder / "autoregressive.pth")
    shutil.copyfile(models / "clvp_tiny" / "clvp.pth", folder / "clvp2.pth")
    shutil.copyfile(models / "diffusion_tiny" / "diffusion_decoder.pth", folder / "diffusion_decoder.pth")
    shutil.copyfile(models / "vocoder_tiny" / "vocoder.pth", folder / "vocoder.pth")
    for name in ("tokenizer.json", "mel_norms.pth"):
        shutil.copyfile(reference_dir / "tortoise" / name, folder / name)
    sizes = {
        "autoregressive": autoregressive_config_from_original_kwargs(read_json(models / "ar_tiny" / "config.json")["kwargs"]).to_dict(),
        "clvp": clvp_config_from_original_kwargs(read_json(models / "clvp_tiny" / "config.json")["kwargs"]).to_dict(),
    }
    (folder / "tortoise_clvp.json").write_text(json.dumps(sizes))
    return folder


# synthesized clips (product tests) ------------------------------------------------------------------------------------
def synth_speech(seconds: float, rate: int, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    """A speech-like float32 signal (samples,): a harmonic voice whose pitch glides, in syllable-long bursts, with a
    little breath noise. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    base = 100.0 + 60.0 * rng.random()
    pitch = base * (1.0 + 0.25 * np.sin(2 * np.pi * (0.4 + 0.3 * rng.random()) * t))  # Hz, gliding
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * (3.0 + rng.random()) * t), 0.0, None) ** 0.5  # ~4 bursts per second
    wave = voice * syllables + 0.02 * rng.standard_normal(t.shape)
    return (peak * wave / np.abs(wave).max()).astype(np.float32)


# name -> (seconds, sample rate, channels, soundfile subtype, peak); the last is longer than the 6 s conditioning
# crop (so the crop seed matters) and clips at 1.3
CLIP_FORMATS = {
    "mono_22k": (3.0, 22050, 1, "PCM_16", 0.5),
    "mono_24k": (2.5, 24000, 1, "PCM_16", 0.5),
    "stereo_44k": (2.0, 44100, 2, "PCM_16", 0.5),
    "long_16k_float_loud": (6.9, 16000, 1, "FLOAT", 1.3),
}


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> dict[str, Path]:
    """Synthesized speech-like wav files, one per `CLIP_FORMATS` entry (the name says rate, channels and format)."""
    folder = tmp_path_factory.mktemp("speech_clips")
    clips = {}
    for seed, (name, (seconds, rate, channels, subtype, peak)) in enumerate(CLIP_FORMATS.items()):
        wave = synth_speech(seconds, rate, seed, peak)
        if channels > 1:
            wave = np.stack([wave] + [synth_speech(seconds, rate, seed + 100 * c, peak) for c in range(1, channels)], axis=1)
        clips[name] = folder / f"{name}.wav"
        soundfile.write(str(clips[name]), wave, rate, subtype=subtype)
    return clips


@pytest.fixture(scope="session")
def speech_clip(speech_clips: dict[str, Path]) -> Path:
    """One 3 s, 22.05 kHz mono 16-bit clip."""
    return speech_clips["mono_22k"]


# tiny seeded model directory (product tests) -------------------------------------------------------------------------
def tiny_parts(seed: int = SEED, **configs) -> dict[str, torch.nn.Module]:
    """Seeded random models of our own classes (`TINY_CONFIGS`, or a part's config given by name), small enough to
    build, save and run in well under a second. The decoder's stop logit is raised so candidates differ in length."""
    from tortoise_clvp.weights.native import PARTS

    torch.manual_seed(seed)
    parts = {part: PARTS[part][1](configs.get(part, config)) for part, config in TINY_CONFIGS.items()}
    with torch.no_grad():
        parts["autoregressive"].mel_head.bias[TOKENS.mel_stop] += TINY_STOP_BIAS
    return parts


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, torch.nn.Module]:
    """The models of `tiny_model_dir` (same seed, same weights) in eval mode, for tests of one stage. Shared by the
    session: copy one before changing it."""
    return {part: model.eval() for part, model in tiny_parts().items()}


def write_tiny_assets(folder: Path, clip: np.ndarray) -> Path:
    """tokenizer.json (trained on `TOKENIZER_SENTENCES`) and mel_norms.pth (the mean log-mel of `clip`, a 22.05 kHz
    signal, per band: the statistic the released norms hold) in `folder`."""
    from tortoise_clvp.frontend.mel import CONDITIONING_N_MELS, conditioning_mel
    from tortoise_clvp.train.tokenizer import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(TOKENIZER_SENTENCES, folder, vocab_size=TOKENIZER_VOCAB)
    log_mel = conditioning_mel(torch.from_numpy(clip), torch.ones(CONDITIONING_N_MELS))  # (80, frames)
    norms = log_mel.mean(dim=1).clamp(max=-1.0)  # never zero: the loader refuses zero divisors
    torch.save(norms.contiguous(), folder / "mel_norms.pth")
    return folder


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """A folder holding the tiny models' tokenizer.json and mel_norms.pth (what `save_native` copies)."""
    return write_tiny_assets(tmp_path_factory.mktemp("tiny_assets"), synth_speech(3.0, 22050, seed=7))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_assets: Path, tmp_path_factory) -> Path:
    """A native model directory of seeded random tiny models (all four parts), needing no reference folder."""
    from tortoise_clvp.weights.native import save_native

    return save_native(tmp_path_factory.mktemp("tiny") / "native", tiny_parts(), tiny_assets)
