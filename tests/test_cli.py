"""The command line through typer's CliRunner, on the tiny model directory and synthesized clips, writing into
tmp_path; start-up checks run the real entry point in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile
from conftest import REPO_ROOT
from typer.testing import CliRunner

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.cli import app
from tortoise_clvp.frontend import audio
from tortoise_clvp.frontend.text import split_and_recombine_text
from tortoise_clvp.presets import preset
from tortoise_clvp.voices import AUDIO_SUFFIXES

runner = CliRunner()
FAST = ["--preset", "ultra_fast_dpm", "--candidates", "2", "--steps", "2", "--max-tokens", "16", "--chunk-chars", "40", "--quiet"]
LONG_TEXT = "This is the first sentence of the text. And here comes the second one, which is longer than the first."


def fast_options():
    """The GenerationOptions the FAST flags ask for, built through the library (not the CLI)."""
    options = preset("ultra_fast_dpm")
    return replace(
        options,
        decoding=replace(options.decoding, num_candidates=2, batch_size=2, max_new_tokens=16),
        diffusion=replace(options.diffusion, steps=2),
    )


@pytest.fixture
def env(tiny_model_dir, tmp_path, monkeypatch, speech_clips):
    """Models from the tiny folder, latents cached in tmp_path, two user voices made of synthesized clips."""
    monkeypatch.setenv("TORTOISE_MODELS_DIR", str(tiny_model_dir))
    monkeypatch.setenv("TORTOISE_CLVP_CACHE", str(tmp_path / "cache"))
    voices = tmp_path / "voices"
    for name, clip in (("alice", speech_clips["mono_22k"]), ("bob", speech_clips["mono_24k"])):
        (voices / name).mkdir(parents=True)
        shutil.copyfile(clip, voices / name / clip.name)
    monkeypatch.setenv("TORTOISE_VOICES_DIR", str(voices))
    return tmp_path


def _speak(*args, input=None):
    return runner.invoke(app, ["speak", *FAST, *args], input=input)


def test_speak_writes_audio_and_reports(env):
    out = env / "hello.wav"
    result = _speak("Hello there.", "--voice", "alice", "-o", str(out), "--seed", "1")
    assert result.exit_code == 0, result.output
    data, rate = soundfile.read(out)
    assert rate == 24000 and len(data) > 0
    assert f"wrote {out}" in result.output and "real-time factor" in result.output and "seed 1" in result.output
    assert not list(env.glob(".hello.wav.chunks*"))  # the work folder is gone once the run completes


def test_speak_with_pruning_gives_the_api_s_audio_and_checks_its_options(env, tiny_model_dir, speech_clips):
    from tortoise_clvp.pipeline.pruning import PruneOptions

    out = env / "pruned.wav"
    result = _speak("Hello there.", "--voice", str(speech_clips["mono_22k"]), "-o", str(out), "--seed", "2",
                    "--candidates", "4", "--prune-at", "2", "--prune-keep", "0.5")
    assert result.exit_code == 0, result.output
    from_cli, _ = soundfile.read(out, dtype="float32")
    options = fast_options()
    options = replace(options, decoding=options.decoding.with_candidates(4), prune=PruneOptions(at_tokens=2, keep=0.5))
    speech = TextToSpeech.from_local(tiny_model_dir).generate("Hello there.", [speech_clips["mono_22k"]], options,
                                                              seed=2)
    np.testing.assert_array_equal(from_cli, speech.waveform.clamp(-1, 1).numpy())
    for args, message in ((["--prune-keep", "0.5"], "need --prune-at"),
                          (["--prune-at", "2", "--prune-score", "loudness"], "score must be 'logprob' or 'clvp'"),
                          (["--prune-at", "2", "--prune-keep", "0"], "keep must be in (0, 1]")):
        result = _speak("Hi.", "--voice", "alice", "-o", str(env / "bad.wav"), *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (env / "bad.wav").exists()


def test_cli_and_api_give_the_same_audio_for_a_seed(env, tiny_model_dir, speech_clips):
    """One conditioning path: the CLI (through the latent cache) and `generate` crop the clip alike, so the same
    seed and clip give the same samples. The clip is longer than the 6 s crop, so a seed-dependent crop would differ."""
    clip = speech_clips["long_16k_float_loud"]
    out = env / "cli.wav"
    result = _speak("Hello there.", "--voice", str(clip), "-o", str(out), "--seed", "7")
    assert result.exit_code == 0, result.output
    from_cli, rate = soundfile.read(out, dtype="float32")
    speech = TextToSpeech.from_local(tiny_model_dir).generate("Hello there.", [clip], fast_options(), seed=7)
    assert rate == speech.sample_rate
    np.testing.assert_array_equal(from_cli, speech.waveform.clamp(-1, 1).numpy())


def test_text_from_stdin_and_file_and_formats(env):
    result = _speak("--voice", "bob", "-o", str(env / "stdin.flac"), input="Read me from standard input.")
    assert result.exit_code == 0, result.output
    assert soundfile.info(env / "stdin.flac").format == "FLAC"
    text_file = env / "text.txt"
    text_file.write_text("Read me from a file.", encoding="utf-8")
    result = _speak("--text-file", str(text_file), "--voice", "bob", "-o", str(env / "file.ogg"))
    assert result.exit_code == 0, result.output
    assert soundfile.info(env / "file.ogg").format == "OGG"


def test_output_suffixes_are_what_save_audio_writes():
    assert set(AUDIO_SUFFIXES) == set(audio._WRITE_FORMATS)


def test_voice_forms(env, speech_clips):
    clip_a, clip_b = str(speech_clips["mono_22k"]), str(speech_clips["stereo_44k"])
    for i, voice in enumerate([["alice&bob"], [clip_a, clip_b], ["random"]]):  # one name, a file, a folder: above
        args = [arg for v in voice for arg in ("--voice", v)]
        result = _speak("Hi there.", *args, "-o", str(env / f"v{i}.wav"))
        assert result.exit_code == 0, (voice, result.output)


def test_keep_writes_the_best_candidates(env):
    result = _speak("Hello.", "--voice", "alice", "-o", str(env / "best.wav"), "--keep", "2")
    assert result.exit_code == 0, result.output
    best, second = soundfile.read(env / "best.wav")[0], soundfile.read(env / "best_2.wav")[0]
    assert len(best) > 0 and len(second) > 0
    result = _speak(LONG_TEXT, "--voice", "alice", "-o", str(env / "long.wav"), "--keep", "2")
    assert result.exit_code == 2 and "fits one chunk" in result.output


def test_existing_output_is_refused_unless_overwrite(env):
    out = env / "taken.wav"
    out.write_bytes(b"precious")
    result = _speak("Hello.", "--voice", "alice", "-o", str(out))
    assert result.exit_code == 2 and "already exist" in result.output and out.read_bytes() == b"precious"
    assert _speak("Hello.", "--voice", "alice", "-o", str(out), "--overwrite").exit_code == 0
    assert out.read_bytes() != b"precious"


@pytest.mark.parametrize(
    "args,message",
    [
        (["Hello.", "--voice", "nobody"], "nobody"),
        (["Hello.", "--voice", "alice", "-o", "/no/such/folder/x.wav"], "does not exist"),
        (["Hello.", "--voice", "alice", "-o", "out.mp3"], "must end in"),
        (["!!! ...", "--voice", "alice"], "nothing to speak"),
        (["🙂🙂", "--voice", "alice"], "error:"),
        (["Hello.", "--voice", "alice", "--preset", "warp"], "unknown preset"),
        (["Hello.", "--voice", "alice", "--dtype", "int8"], "--dtype"),
        (["Hello.", "--voice", "alice", "--sampler", "euler"], "sampler"),
        (["Hello.", "--voice", "alice", "-o", "-", "--keep", "2"], "--keep needs an output file"),
    ],
)
def test_bad_input_is_one_clear_line(env, monkeypatch, args, message):
    monkeypatch.chdir(env)
    result = _speak(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_missing_models_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("TORTOISE_MODELS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from tortoise_clvp.weights import discovery

    monkeypatch.setattr(discovery, "BUNDLED_MODEL_DIR", tmp_path / "no_bundled_model")
    result = runner.invoke(app, ["speak", "Hello.", "-o", str(tmp_path / "x.wav"), "--quiet"])
    assert result.exit_code == 2 and "download" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.wav").exists()


def test_long_text_streams_chunks_and_cleans_up(env):
    out = env / "long.wav"
    result = runner.invoke(app, ["speak", LONG_TEXT, "--voice", "alice", "-o", str(out), "--stream", "--seed", "5",
                                 *[a for a in FAST if a != "--quiet"]])
    assert result.exit_code == 0, result.output
    assert "chunk 1/" in result.output and "chunk 2/" in result.output
    assert out.exists() and not list(env.glob(".long.wav.chunks*"))


def test_progress_is_drawn_per_stage(env):
    result = runner.invoke(app, ["speak", "Hello there.", "--voice", "alice", "-o", str(env / "p.wav"),
                                 *[a for a in FAST if a != "--quiet"]])
    assert result.exit_code == 0, result.output
    for stage in ("loading models", "conditioning", "sampling", "candidates finished", "reranking", "diffusion"):
        assert stage in result.output, stage


def test_interrupted_long_run_resumes_without_redoing_chunks(env, monkeypatch):
    out = env / "resume.wav"
    real = TextToSpeech.generate
    calls = []

    def interrupt_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TextToSpeech, "generate", interrupt_second)
    first = _speak(LONG_TEXT, "--voice", "alice", "-o", str(out), "--seed", "9")
    assert first.exit_code == 130 and "interrupted" in first.output and not out.exists()
    calls.clear()
    monkeypatch.setattr(TextToSpeech, "generate", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    second = _speak(LONG_TEXT, "--voice", "alice", "-o", str(out), "--seed", "9")
    assert second.exit_code == 0, second.output
    chunks = split_and_recombine_text(LONG_TEXT, 40, 60)
    assert len(chunks) > 1 and len(calls) == len(chunks) - 1, "the finished first chunk is not generated again"
    assert out.exists()


def test_raw_pcm_on_stdout_is_the_wav_output_in_16_bits(env):
    result = runner.invoke(app, ["speak", "Hello there.", "--voice", "alice", "-o", "-", "--seed", "3", *FAST])
    assert result.exit_code == 0
    pcm = np.frombuffer(result.stdout_bytes, dtype="<i2")
    written = _speak("Hello there.", "--voice", "alice", "-o", str(env / "same.wav"), "--seed", "3")
    assert written.exit_code == 0, written.output
    wav, _ = soundfile.read(env / "same.wav", dtype="float32")
    assert pcm.shape == wav.shape and np.abs(pcm).max() > 0
    np.testing.assert_array_equal(pcm, np.round(np.clip(wav, -1, 1) * 32767).astype(np.int16))


def test_voices_latents_info_and_convert(env, tiny_model_dir):
    listing = runner.invoke(app, ["voices"])
    assert listing.exit_code == 0 and "alice" in listing.output and "piper_joe" in listing.output
    cached = runner.invoke(app, ["latents", "alice"])
    assert cached.exit_code == 0 and "cached alice" in cached.output
    assert list((env / "cache").glob("*.safetensors"))
    described = runner.invoke(app, ["info", str(tiny_model_dir)])
    assert described.exit_code == 0 and "native" in described.output
    converted = runner.invoke(app, ["convert", str(tiny_model_dir), str(env / "native")])
    assert converted.exit_code == 0 and "wrote" in converted.output
    again = runner.invoke(app, ["convert", str(tiny_model_dir), str(env / "native")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_candidates_ranks_and_reports(env):
    args = ["candidates", "Hello there.", "--voice", "alice", "-n", "3", "--batch-size", "2", "--max-tokens", "12",
            "--seed", "4", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    scores = [float(row[2]) for row in rows]
    assert scores == sorted(scores, reverse=True)


def test_download_without_network_is_one_clear_error(env, monkeypatch):
    from tortoise_clvp.errors import CheckpointError
    from tortoise_clvp.weights import download

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise CheckpointError("cannot reach the Hugging Face hub; put the files in the folder by hand")

    monkeypatch.setattr(download, "fetch_models", offline)  # what the command calls: no real download can start
    result = runner.invoke(app, ["download", "--dest", str(env / "models")])
    assert result.exit_code == 2 and "by hand" in result.output and len(calls) == 1


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "tortoise_clvp", "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0 and "speak" in result.stdout


def _imported_by(args: list[str], cwd) -> tuple[int, str, set[str]]:
    """Run `python -m tortoise_clvp ARGS` with -X importtime: (exit status, output, names of the modules it imported)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tortoise_clvp", *args],
                            capture_output=True, text=True, cwd=cwd)
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return result.returncode, result.stdout + result.stderr, modules


@pytest.mark.parametrize(
    "args,status",
    [
        (["--help"], 0),
        (["speak", "--help"], 0),
        (["voices"], 0),
        (["speak", "Hi.", "--voice", "nobody"], 2),
        (["speak", "Hi.", "-o", "out.mp3"], 2),
        (["speak", "Hi.", "--dtype", "int8"], 2),
        (["speak", "Hi.", "--seed", "-1"], 2),
        (["speak", "Hi.", "--keep", "2", "-o", "-"], 2),
        (["candidates", "Hi."], 2),
    ],
)
def test_help_voices_and_argument_errors_do_not_import_torch(tmp_path, args, status):
    code, output, modules = _imported_by(args, tmp_path)
    assert code == status, output
    assert "tortoise_clvp.cli" in modules  # the measurement sees the package's own imports
    assert not {name for name in modules if name == "torch" or name.startswith("torch.")}, args


def test_without_preset_the_model_folders_own_default_is_used(env, tiny_model_dir, monkeypatch, speech_clips):
    """A folder naming `default_preset` (as the bundled model does) is spoken with it when --preset is not given;
    `info` shows it; the help lists every preset."""
    import json

    from tortoise_clvp.cli import PRESET_HELP
    from tortoise_clvp.presets import PRESETS
    from tortoise_clvp.weights.native import CONFIG_FILE

    folder = env / "model"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**meta, "default_preset": "ultra_fast_ddim"}))
    monkeypatch.setenv("TORTOISE_MODELS_DIR", str(folder))
    clip = speech_clips["mono_22k"]
    out = env / "default.wav"
    args = ["Hello there.", "--voice", str(clip), "--candidates", "2", "--max-tokens", "16", "--seed", "3", "--quiet"]
    result = runner.invoke(app, ["speak", *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    from_cli, _ = soundfile.read(out, dtype="float32")
    tts = TextToSpeech.from_local(folder)

    def spoken(name: str) -> np.ndarray:
        options = preset(name)
        options = replace(options, decoding=replace(options.decoding, num_candidates=2, batch_size=2, max_new_tokens=16))
        return tts.generate("Hello there.", [clip], options, seed=3).waveform.clamp(-1, 1).numpy()

    np.testing.assert_array_equal(from_cli, spoken("ultra_fast_ddim"))
    assert not np.array_equal(from_cli, spoken("ultra_fast_dpm"))
    described = runner.invoke(app, ["info", str(folder)])
    assert "Default preset: ultra_fast_ddim" in described.output
    assert all(name in PRESET_HELP for name in PRESETS)
