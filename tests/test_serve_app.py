"""The server's routes through FastAPI's test client: speech equals the library's for the same seed, every bad input
gets a 4xx JSON error naming the problem (no traceback), voice uploads, a full queue (429), time limits (504),
metrics and health."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile
from conftest import BUNDLED_VOICES, synth_speech
from fastapi.testclient import TestClient
from serve_helpers import WAIT_S, gate, wait_until

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.longform import STREAMING_FIRST_CHUNK, speak_long
from tortoise_clvp.presets import preset
from tortoise_clvp.serve import formats
from tortoise_clvp.serve.app import create_app
from tortoise_clvp.serve.settings import ServeSettings
from tortoise_clvp.voices import voice_latents

TEXT = ("The quick brown fox jumps over the lazy dog, then runs far away into the green forest behind the farm. "
        "She sells sea shells by the sea shore, and the shells she sells are surely sea shells from the bay. "
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.")  # two chunks
SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "piper_joe", "candidates": 2, "seed": 1}


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return ServeSettings(model_name="tiny", workers=2, max_queue=1, max_upload_bytes=400_000, max_clip_seconds=5.0,
                         cache_dir=tmp_path_factory.mktemp("latents"))


@pytest.fixture(scope="module")
def client(tts, settings):
    with TestClient(create_app(tts, settings)) as client:
        yield client


def _wav(seconds: float, rate: int = 22050) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, synth_speech(seconds, rate, seed=5), rate, format="WAV")
    return buffer.getvalue()


def test_speech_is_the_librarys_for_the_same_seed(client, tts, settings):
    response = client.post("/v1/audio/speech", json={**SPEECH, "input": TEXT, "response_format": "pcm", "seed": 7})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/pcm" and response.headers["x-seed"] == "7"
    options = preset("ultra_fast_dpm")
    decoding = replace(options.decoding, num_candidates=2, batch_size=2,
                       max_new_tokens=tts.models.autoregressive.config.mel_positions - 2)
    voice = voice_latents(tts, "piper_joe", settings.cache_dir).conditioning
    expected = speak_long(tts, TEXT, voice, replace(options, decoding=decoding), seed=7)
    assert len(expected.chunks) == 2
    assert response.content == formats.pcm16(expected.waveform.numpy())


@pytest.mark.parametrize("name", ["wav", "flac", "mp3", "opus"])
def test_response_formats_decode(client, name):
    response = client.post("/v1/audio/speech", json={**SPEECH, "response_format": name})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == formats.FORMATS[name].media_type
    audio, rate = soundfile.read(io.BytesIO(response.content))
    assert rate == 24000 and len(audio) > 0


def test_streamed_wav_speaks_the_first_sentence_alone_then_the_usual_chunks(client, tts, settings):
    streamed = client.post("/v1/audio/speech", json={**SPEECH, "input": TEXT, "response_format": "wav", "stream": True})
    assert streamed.status_code == 200
    options = preset("ultra_fast_dpm")
    decoding = replace(options.decoding, num_candidates=2, batch_size=2,
                       max_new_tokens=tts.models.autoregressive.config.mel_positions - 2)
    voice = voice_latents(tts, "piper_joe", settings.cache_dir).conditioning
    expected = speak_long(tts, TEXT, voice, replace(options, decoding=decoding), seed=1,
                          first_chunk_length=STREAMING_FIRST_CHUNK)
    assert len(expected.chunks) == 3 and expected.texts[0].endswith("forest behind the farm.")
    assert streamed.content[:4] == b"RIFF" and streamed.content[44:] == formats.pcm16(expected.waveform.numpy())


BAD = [
    ({"input": ""}, 400, "input is empty"),
    ({"input": "   "}, 400, "input is empty"),
    ({"input": "x" * 5000}, 400, "at most 4096"),
    ({"input": "?!"}, 400, "nothing to speak"),
    ({"voice": "nobody"}, 400, "unknown voice 'nobody'"),
    ({"voice": "../voices/piper_joe"}, 400, "paths are not accepted"),
    ({"voice": "/etc/passwd"}, 400, "paths are not accepted"),
    ({"voice": "piper_joe&..\\x"}, 400, "paths are not accepted"),
    ({"voice": ".hidden"}, 400, "paths are not accepted"),
    ({"model": "gpt-4"}, 400, "model 'gpt-4' is not served"),
    ({"speed": 1.25}, 400, "speed 1.25 is not supported"),
    ({"response_format": "aac"}, 400, "'aac' is not supported"),
    ({"response_format": "wma"}, 400, "'wma' is not supported"),
    ({"response_format": "flac", "stream": True}, 400, "stream sends pcm or wav"),
    ({"preset": "turbo"}, 400, "unknown preset 'turbo'"),
    ({"seed": -1}, 400, "seed must be"),
    ({"seed": True}, 400, "seed"),
    ({"candidates": 0}, 400, "candidates must be from 1"),
    ({"input": 5}, 400, "input"),
    ({"instructions": "whisper"}, 400, "instructions: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("change, status, message", BAD, ids=[str(change) for change, _, _ in BAD])
def test_bad_speech_requests_are_refused_clearly(client, change, status, message):
    response = client.post("/v1/audio/speech", json={**SPEECH, **change})
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error" and "Traceback" not in response.text


@pytest.mark.parametrize("body, message", [
    (b'{"model": "tts-1", "input": "caf\xe9", "voice": "piper_joe"}', "not valid UTF-8"),
    (b'{"model": "tts-1", "input": "\\ud800", "voice": "piper_joe"}', "lone surrogate"),
    (b'{"model": "tts-1", ', "not JSON"),
    (b'["a list"]', "Input should be"),
    (b'{"model": "tts-1", "voice": "piper_joe"}', "input: Field required"),
])
def test_malformed_bodies_are_refused(client, body, message):
    response = client.post("/v1/audio/speech", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_oversized_body_is_refused(client):
    response = client.post("/v1/audio/speech", content=b" " * (2 << 20), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_voices_list_and_upload(client, speech_clip):
    before = sorted(p.relative_to(BUNDLED_VOICES) for p in BUNDLED_VOICES.rglob("*"))
    listed = client.get("/v1/audio/voices").json()["voices"]
    assert {"id": "piper_joe", "name": "piper_joe", "source": "bundled"} in listed
    assert {"id": "random", "name": "random", "source": "random"} in listed

    clip = speech_clip.read_bytes()
    made = client.post("/v1/audio/voices", files=[("files", ("me.wav", clip, "audio/wav"))], data={"name": "me"})
    assert made.status_code == 200, made.text
    voice = made.json()
    assert voice["id"].startswith("upload-") and voice["name"] == "me" and voice["source"] == "upload"
    again = client.post("/v1/audio/voices", files=[("files", ("other-name.wav", clip, "audio/wav"))]).json()
    assert again["id"] == voice["id"]  # the same clips make the same voice
    assert voice["id"] in [v["id"] for v in client.get("/v1/audio/voices").json()["voices"]]
    spoken = client.post("/v1/audio/speech", json={**SPEECH, "voice": voice["id"]})
    assert spoken.status_code == 200, spoken.text
    assert sorted(p.relative_to(BUNDLED_VOICES) for p in BUNDLED_VOICES.rglob("*")) == before  # nothing written there


@pytest.mark.parametrize("files, data, status, message", [
    ([("files", ("a.wav", b"not audio at all", "audio/wav"))], {}, 400, "not audio this server can read"),
    ([("files", ("long.wav", _wav(6.0), "audio/wav"))], {}, 400, "at most 5 s"),
    ([("files", ("short.wav", _wav(0.5), "audio/wav"))], {}, 400, "at least 1 s"),
    ([("files", ("big.wav", _wav(4.5, 48000), "audio/wav"))], {}, 413, "over 400000 bytes"),
    ([("files", ("empty.wav", b"", "audio/wav"))], {}, 400, "is empty"),
    ([("name", (None, "only a name"))], {}, 400, "no clips uploaded"),
    ([("files", ("a.wav", _wav(2.0), "audio/wav"))], {"name": "x" * 65}, 400, "name must be"),
    ([("files", ("a.wav", _wav(2.0), "audio/wav"))], {"colour": "blue"}, 400, "unknown form field 'colour'"),
])
def test_bad_uploads_are_refused(client, files, data, status, message):
    response = client.post("/v1/audio/voices", files=files, data=data)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_upload_must_be_multipart(client):
    response = client.post("/v1/audio/voices", json={"files": "clip.wav"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["error"]["message"]


def test_full_queue_gets_429_with_retry_after(client):
    scheduler = client.app.state.scheduler
    results = []

    def speak():
        results.append(client.post("/v1/audio/speech", json=SPEECH).status_code)

    with gate(scheduler.tts) as held:
        threads = [threading.Thread(target=speak) for _ in range(3)]  # 2 workers + 1 waiting
        for thread in threads:
            thread.start()
        # both workers hold a request and the third waits: only then is the queue full (a request passing through
        # the queue on its way to a worker would end the wait too early)
        wait_until(lambda: held.held == 2 and scheduler.queue_depth == 1,
                   lambda: f"held {held.held}, queued {scheduler.queue_depth}", time.monotonic() + WAIT_S)
        refused = client.post("/v1/audio/speech", json=SPEECH)
        held.release()
        for thread in threads:
            thread.join(WAIT_S)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "busy" in refused.json()["error"]["message"]
    assert results == [200, 200, 200]


def test_a_request_past_its_time_limit_gets_504(tts, settings):
    with TestClient(create_app(tts, replace(settings, timeout_s=0.5))) as client, gate(client.app.state.scheduler.tts) as held:
        threading.Timer(1.0, held.release).start()
        response = client.post("/v1/audio/speech", json=SPEECH)
    assert response.status_code == 504 and "longer than" in response.json()["error"]["message"]


def test_health_metrics_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "model": "tiny", "queue_depth": 0}
    assert client.post("/v1/audio/speech", json={**SPEECH, "model": "tiny"}).status_code == 200
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines() if not line.startswith("#"))
    assert float(lines['clvp_requests_total{outcome="ok"}']) >= 1
    assert float(lines['clvp_requests_total{outcome="bad_request"}']) >= 1
    assert float(lines["clvp_request_seconds_count"]) >= 1
    assert float(lines['clvp_time_to_first_audio_seconds_bucket{le="+Inf"}']) >= 1
    assert float(lines["clvp_decoded_tokens_total"]) > 0 and "clvp_decode_tokens_per_second" in lines
    assert lines["clvp_queue_depth"] == "0"
    assert float(lines["clvp_diffusion_rows_total"]) >= float(lines["clvp_diffusion_batches_total"]) >= 1
    page = client.get("/")
    assert page.status_code == 200 and "<textarea" in page.text and "/page/page.js" in page.text
    assert "getReader" in client.get("/page/page.js").text
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Not Found"


def test_errors_inside_the_engine_are_500_without_traceback(tts, settings):
    with TestClient(create_app(tts, settings)) as client:
        scheduler = client.app.state.scheduler

        def broken(*args, **kwargs):
            raise RuntimeError("secret internal detail")

        scheduler.tts.generate = broken
        response = client.post("/v1/audio/speech", json=SPEECH)
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["error"]["message"]
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert json.loads(response.text)["error"]["type"] == "server_error"


def test_token_budgets_fit_the_model_and_the_settings(client, tts, settings):
    limit = tts.models.autoregressive.config.mel_positions - 2
    assert client.app.state.scheduler.fitted(preset("fast")).decoding.max_new_tokens == min(500, limit)
    with TestClient(create_app(tts, replace(settings, max_tokens=7))) as capped:
        assert capped.app.state.scheduler.fitted(preset("fast")).decoding.max_new_tokens == 7


def test_settings_are_checked():
    with pytest.raises(ValueError, match="workers"):
        ServeSettings(workers=0)
    with pytest.raises(ValueError, match="torch_threads"):
        ServeSettings(torch_threads=0)
    with pytest.raises(ValueError, match="unknown preset"):
        ServeSettings(models={"tts-1": "nope"})
    with pytest.raises(ValueError, match="max_tokens"):
        ServeSettings(max_tokens=0)
    assert np.frombuffer(formats.pcm16(np.array([1.5, -1.5, 0.5])), "<i2").tolist() == [32767, -32767, 16384]


def test_settings_fit_the_models_own_preset():
    """A folder naming its preset (the bundled model) is served with it for its own name and for tts-1; without one,
    the package's default and OpenAI's mapping stay; a preset given on the command line wins for the model's name."""
    from tortoise_clvp.presets import DEFAULT_PRESET
    from tortoise_clvp.serve.settings import OPENAI_MODELS

    plain = ServeSettings(model_name="m").for_model(None)
    assert plain.preset_for("m") == DEFAULT_PRESET and plain.models == OPENAI_MODELS
    named = ServeSettings(model_name="m").for_model("ultra_fast_ddim")
    assert named.preset_for("m") == named.preset_for("tts-1") == "ultra_fast_ddim"
    assert named.preset_for("tts-1-hd") == OPENAI_MODELS["tts-1-hd"]
    chosen = ServeSettings(model_name="m", default_preset="fast_dpm").for_model("ultra_fast_ddim")
    assert chosen.preset_for("m") == "fast_dpm"
