"""Voice registry, resolving what the user types, and cached voice latents (tiny random models, synthesized clips);
the bundled voices in a built wheel."""

from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import BUNDLED_VOICES, REPO_ROOT

from tortoise_clvp import AudioError, Conditioning, TextToSpeech
from tortoise_clvp import voices as V
from tortoise_clvp.seeds import CROP_SEED
from tortoise_clvp.train.config import FULL_VOICES
from tortoise_clvp.voices import (
    BUNDLED_VOICES_DIR,
    LatentCacheError,
    list_voices,
    precompute_latents,
    resolve_voice,
    voice_conditioning,
    voice_latents,
)

BUNDLED = tuple(voice.name for voice in FULL_VOICES)  # every voice of the training corpus, held-out ones too


@pytest.fixture(scope="module")
def tts(tiny_model_dir: Path) -> TextToSpeech:
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(V.VOICES_DIR_ENV, raising=False)
    monkeypatch.setenv(V.CACHE_DIR_ENV, str(tmp_path / "default_cache"))


@pytest.fixture
def clips(speech_clips: dict[str, Path]) -> dict[str, Path]:
    return {
        "a": speech_clips["mono_22k"],
        "b": speech_clips["mono_24k"],
        "c": speech_clips["stereo_44k"],
        "d": speech_clips["long_16k_float_loud"],  # 6.9 s: longer than the 6 s crop, so the seed matters
    }


def make_voice(parent: Path, name: str, *sources: Path) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    for i, source in enumerate(sources):
        shutil.copyfile(source, folder / f"clip{i + 1}{source.suffix}")
    return folder


@pytest.fixture
def user_dir(tmp_path: Path, clips) -> Path:
    root = tmp_path / "my_voices"
    make_voice(root, "alice", clips["a"], clips["b"])
    make_voice(root, "bob", clips["c"])
    make_voice(root, "dora", clips["d"])
    (root / "empty").mkdir()
    (root / "notes_only").mkdir()
    (root / "notes_only" / "readme.txt").write_text("not a clip")
    make_voice(root, ".hidden", clips["a"])
    return root


def folder_state(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def count_calls(monkeypatch, tts) -> list:
    calls: list = []
    original = TextToSpeech.get_conditioning.__get__(tts)

    def counting(clips, seed=CROP_SEED, progress=None):
        calls.append((list(clips), seed))
        return original(clips, seed, progress)

    monkeypatch.setattr(tts, "get_conditioning", counting)
    return calls


# Registry ---------------------------------------------------------------------------------------------------------
def test_bundled_voices_are_listed():
    # found through the installed package (the data package pyproject.toml maps onto voices/), not a repository path
    assert BUNDLED_VOICES_DIR == Path(str(importlib.resources.files(V.BUNDLED_VOICES_PACKAGE)))
    assert BUNDLED_VOICES_DIR.resolve() == BUNDLED_VOICES.resolve()  # an editable install: the repository's folder
    found = {v.name: v for v in list_voices()}
    for name in BUNDLED:
        assert found[name].source == "bundled"
        assert found[name].folder == BUNDLED_VOICES_DIR / name
        assert found[name].clips and all(c.suffix == ".flac" for c in found[name].clips)


def test_user_dirs_and_env_var(tmp_path, user_dir, clips, monkeypatch):
    found = {v.name: v for v in list_voices([user_dir])}
    assert {"alice", "bob", "dora"} <= set(found)
    assert not {"empty", "notes_only", ".hidden"} & set(found)  # no clips / hidden: not voices
    assert found["alice"].source == "user" and [c.name for c in found["alice"].clips] == ["clip1.wav", "clip2.wav"]
    assert found["piper_joe"].source == "bundled"

    env_dir, other = tmp_path / "env_voices", tmp_path / "other_voices"
    make_voice(env_dir, "carol", clips["b"])
    make_voice(env_dir, "piper_joe", clips["c"])  # shadows the bundled voice
    make_voice(env_dir, "alice", clips["d"])  # explicit dirs win over the environment's
    make_voice(other, "erin", clips["a"])
    monkeypatch.setenv(V.VOICES_DIR_ENV, f"{env_dir}{V.os.pathsep}{tmp_path / 'missing'}{V.os.pathsep}{other}")
    found = {v.name: v for v in list_voices([user_dir])}
    assert found["carol"].source == "user" and found["erin"].folder == other / "erin"
    assert found["piper_joe"].source == "user" and found["piper_joe"].folder == env_dir / "piper_joe"
    assert found["alice"].folder == user_dir / "alice"
    assert [v.name for v in list_voices([user_dir])] == sorted(found)

    with pytest.raises(AudioError, match="does not exist"):
        list_voices([tmp_path / "nope"])


def test_missing_bundled_folder_is_tolerated(monkeypatch, tmp_path):
    monkeypatch.setattr(V, "BUNDLED_VOICES_DIR", tmp_path / "not_installed")
    assert list_voices() == []
    monkeypatch.setattr(V, "BUNDLED_VOICES_DIR", None)  # the package installed without its voices
    assert list_voices() == []
    with pytest.raises(AudioError, match="No named voices"):
        resolve_voice("piper_joe")


# Resolving --------------------------------------------------------------------------------------------------------
def test_resolve_every_form(tmp_path, user_dir, clips, monkeypatch):
    named = resolve_voice("piper_joe")
    assert named.kind == "named" and named.source == "bundled"
    assert named.clips == (BUNDLED_VOICES_DIR / "piper_joe" / "clip1.flac",)

    user = resolve_voice(" alice ", [user_dir])
    assert user.kind == "named" and user.source == "user" and len(user.clips) == 2

    file = resolve_voice(str(clips["a"]))
    assert file.kind == "file" and file.clips == (clips["a"],)
    assert resolve_voice(clips["a"]).clips == (clips["a"],)  # a PathLike is always a path

    folder = resolve_voice(str(user_dir / "alice"))
    assert folder.kind == "folder" and folder.clips == user.clips

    monkeypatch.chdir(user_dir)  # a plain name is a voice name first, then a relative path; ./name is a path
    assert resolve_voice("bob").kind == "folder"
    assert resolve_voice("bob", [user_dir]).kind == "named"
    assert resolve_voice("./bob", [user_dir]).kind == "folder"

    combined = resolve_voice(f"alice&piper_joe & {clips['c']}", [user_dir])
    assert combined.is_combined and [p.kind for p in combined.parts] == ["named", "named", "file"]
    assert combined.name == f"alice&piper_joe&{clips['c']}"
    assert combined.clips == user.clips + named.clips + (clips["c"],)

    rand = resolve_voice("random")
    assert rand.is_random and rand.clips == ()
    assert resolve_voice("Random").is_random


def test_unknown_name_lists_voices_closest_first(user_dir):
    with pytest.raises(AudioError) as info:
        resolve_voice("alise", [user_dir])
    message = str(info.value)
    assert "unknown voice 'alise'" in message and "Did you mean alice?" in message
    listed = message.split("Available voices: ")[1]
    assert listed.index("alice") < listed.index("piper_joe") and "bob" in listed and "dora" in listed
    assert V.VOICES_DIR_ENV in message and "folder of" in message  # how to add one
    with pytest.raises(AudioError, match="Did you mean espeak_gb_f3"):
        resolve_voice("espeak_gbf3")


def test_resolve_errors(tmp_path, user_dir, clips):
    with pytest.raises(AudioError, match="holds no .wav/.flac/.ogg clips"):
        resolve_voice(str(user_dir / "empty"))
    with pytest.raises(AudioError, match="holds no"):
        resolve_voice(str(user_dir / "notes_only"))
    mp3 = tmp_path / "voice.mp3"
    mp3.write_bytes(b"ID3 not really")
    with pytest.raises(AudioError, match=r"\.mp3 file; voice clips must be"):
        resolve_voice(str(mp3))
    with pytest.raises(AudioError, match="not found"):
        resolve_voice(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="not found"):
        resolve_voice(tmp_path / "missing_folder")
    with pytest.raises(AudioError, match="cannot be combined"):
        resolve_voice("random&alice", [user_dir])
    with pytest.raises(AudioError, match="empty part"):
        resolve_voice("alice&", [user_dir])
    with pytest.raises(AudioError, match="unknown voice 'nobody'"):
        resolve_voice("alice&nobody", [user_dir])
    with pytest.raises(AudioError, match="empty voice"):
        resolve_voice("  ")


# Latents ----------------------------------------------------------------------------------------------------------
def assert_same(x: Conditioning, y: Conditioning) -> None:
    assert torch.equal(x.autoregressive, y.autoregressive)
    assert (x.diffusion is None) == (y.diffusion is None)
    if x.diffusion is not None:
        assert torch.equal(x.diffusion, y.diffusion)


def test_single_voice_matches_get_conditioning_and_caches(tts, user_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    before = folder_state(user_dir)
    spec = resolve_voice("alice", [user_dir])
    direct = tts.get_conditioning(list(spec.clips))
    calls = count_calls(monkeypatch, tts)

    first = voice_latents(tts, spec, cache)
    assert len(calls) == 1 and not first.cached and first.cache_error is None and first.seed == CROP_SEED
    assert first.cache_path is not None and first.cache_path.parent == cache and first.cache_path.is_file()
    assert first.conditioning.autoregressive.shape == (tts.models.autoregressive.config.model_dim,)
    assert first.conditioning.diffusion is not None
    assert torch.allclose(first.conditioning.autoregressive, direct.autoregressive)  # clip order: only crops differ
    assert torch.allclose(first.conditioning.diffusion, direct.diffusion, atol=1e-6)

    second = voice_latents(tts, "alice", cache, extra_dirs=[user_dir])
    assert len(calls) == 1 and second.cached and second.cache_path == first.cache_path
    assert_same(first.conditioning, second.conditioning)
    assert_same(voice_conditioning(tts, spec, cache), first.conditioning)
    assert len(calls) == 1
    assert [p.name for p in cache.iterdir()] == [first.cache_path.name]  # no temp files left
    assert folder_state(user_dir) == before  # nothing written into the voice folders

    # the default cache folder comes from $TORTOISE_CLVP_CACHE
    third = voice_latents(tts, spec)
    assert third.cache_path.parent == tmp_path / "default_cache" and len(calls) == 2
    assert voice_latents(tts, spec, cache, cache=False).cache_path is None and len(calls) == 3


def test_cache_key_follows_clip_bytes_and_seed(tts, user_dir, clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = count_calls(monkeypatch, tts)
    dora = resolve_voice(str(user_dir / "dora"))
    seeded = [voice_latents(tts, dora, cache, seed=s) for s in (1, 2, 1)]
    assert len(calls) == 2 and [r.cached for r in seeded] == [False, False, True]
    assert seeded[0].cache_path != seeded[1].cache_path and seeded[2].cache_path == seeded[0].cache_path
    assert not torch.equal(seeded[0].conditioning.autoregressive, seeded[1].conditioning.autoregressive)  # crops

    bob = user_dir / "bob"
    first = voice_latents(tts, str(bob), cache)
    shutil.copyfile(clips["a"], bob / "clip1.wav")  # same name, other bytes
    second = voice_latents(tts, str(bob), cache)
    assert not second.cached and second.cache_path != first.cache_path and len(calls) == 4
    assert not torch.equal(first.conditioning.autoregressive, second.conditioning.autoregressive)

    (bob / "clip1.wav").rename(bob / "renamed.wav")  # a rename keeps the bytes, so the key
    assert voice_latents(tts, str(bob), cache).cached


def test_corrupt_cache_file_is_rewritten(tts, user_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = count_calls(monkeypatch, tts)
    first = voice_latents(tts, str(user_dir / "bob"), cache)
    for garbage in (b"", b"\x00garbage" * 10, first.cache_path.read_bytes()[:-7]):
        first.cache_path.write_bytes(garbage)
        again = voice_latents(tts, str(user_dir / "bob"), cache)
        assert not again.cached and again.cache_error is None
        assert_same(again.conditioning, first.conditioning)
    assert len(calls) == 4
    assert voice_latents(tts, str(user_dir / "bob"), cache).cached


def test_unwritable_cache_still_returns_latents(tts, user_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cache = blocker / "cache"  # cannot be created, even by root
    result = voice_latents(tts, str(user_dir / "bob"), cache)
    assert result.cache_path is None and not result.cached and "cannot write the latent cache" in result.cache_error
    assert_same(result.conditioning, voice_latents(tts, str(user_dir / "bob"), tmp_path / "ok").conditioning)
    assert isinstance(voice_conditioning(tts, str(user_dir / "bob"), cache), Conditioning)
    with pytest.raises(LatentCacheError, match="cannot write"):
        precompute_latents(tts, str(user_dir / "bob"), cache)


def test_cache_folder_inside_voice_folder_is_refused(tts, user_dir):
    before = folder_state(user_dir)
    result = voice_latents(tts, "alice", user_dir / "alice" / "cache", extra_dirs=[user_dir])
    assert result.cache_path is None and "inside voice folder" in result.cache_error
    both = voice_latents(tts, "bob&alice", user_dir / "alice" / "cache", extra_dirs=[user_dir])
    assert both.cache_path is None and "inside voice folder" in both.cache_error
    assert folder_state(user_dir) == before and not (user_dir / "alice" / "cache").exists()


def test_combined_is_the_mean_of_its_parts(tts, user_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    alice = voice_conditioning(tts, "alice", cache, extra_dirs=[user_dir])
    bob = voice_conditioning(tts, "bob", cache, extra_dirs=[user_dir])
    calls = count_calls(monkeypatch, tts)
    both = voice_latents(tts, "alice&bob", cache, extra_dirs=[user_dir])
    assert len(calls) == 0 and not both.cached and [p.cached for p in both.parts] == [True, True]
    assert torch.allclose(both.conditioning.autoregressive, (alice.autoregressive + bob.autoregressive) / 2)
    assert torch.allclose(both.conditioning.diffusion, (alice.diffusion + bob.diffusion) / 2)
    # not the merged clips: alice has two clips and bob one
    merged = tts.get_conditioning([*resolve_voice("alice", [user_dir]).clips, *resolve_voice("bob", [user_dir]).clips], 0)
    assert not torch.allclose(merged.autoregressive, both.conditioning.autoregressive)

    swapped = voice_latents(tts, "bob&alice", cache, extra_dirs=[user_dir])
    assert swapped.cached and swapped.cache_path == both.cache_path
    assert precompute_latents(tts, "alice&bob", cache, extra_dirs=[user_dir]) == both.cache_path


def test_random_voice_is_seeded_and_shaped(tts, tmp_path):
    cache = tmp_path / "cache"
    one, again, other = (voice_latents(tts, "random", cache, seed=s) for s in (7, 7, 8))
    assert one.seed == 7 and one.cache_path is None and not cache.exists()
    assert one.conditioning.autoregressive.shape == (tts.models.autoregressive.config.model_dim,)
    assert one.conditioning.diffusion.shape == (2 * tts.models.diffusion.config.model_channels,)
    assert_same(one.conditioning, again.conditioning)
    assert not torch.equal(one.conditioning.autoregressive, other.conditioning.autoregressive)
    fresh = voice_latents(tts, "random", cache)
    assert isinstance(fresh.seed, int)
    assert_same(fresh.conditioning, voice_conditioning(tts, "random", cache, seed=fresh.seed))
    with pytest.raises(AudioError, match="nothing to precompute|no latents to precompute"):
        precompute_latents(tts, "random", cache)


def test_precompute_then_use(tts, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = precompute_latents(tts, "piper_joe", cache)
    assert path.is_file() and path.parent == cache and path.suffix == ".safetensors"
    calls = count_calls(monkeypatch, tts)
    assert voice_latents(tts, "piper_joe", cache).cached and not calls


def test_model_identity_tracks_weights(tts):
    before = V.model_identity(tts.models)
    assert V.model_identity(tts.models) == before
    weight = next(tts.models.autoregressive.conditioning_encoder.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.5)
    try:
        assert V.model_identity(tts.models) != before
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert V.model_identity(tts.models) == before


def test_the_wheel_carries_the_bundled_voices(tmp_path):
    """A wheel install finds the voices through the package: build one from the sources and look inside."""
    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for folder in ("tortoise_clvp", "voices"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=skip)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = V.BUNDLED_VOICES_PACKAGE.replace(".", "/")
    for voice in list_voices():
        if voice.source == "bundled":
            assert {f"{package}/{voice.name}/{clip.name}" for clip in voice.clips} <= names
    assert f"{package}/__init__.py" in names and "tortoise_clvp/voices.py" in names
    assert not [name for name in names if name.startswith("voices/")]  # no top-level package named `voices`
