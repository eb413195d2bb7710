"""The HTTP server: OpenAI's speech API plus voices, health, Prometheus metrics and a web page, over the `Scheduler`.

Routes:

* ``POST /v1/audio/speech`` (JSON): ``model`` (``tts-1``, ``tts-1-hd`` or the loaded model's name: a preset each),
  ``input``, ``voice``, ``response_format`` (see `formats`), ``speed`` (only 1.0: other values are refused, not
  ignored), ``stream`` (pcm or wav sent chunk by chunk as each is ready, the first sentence alone so it comes
  soonest); extensions ``preset``, ``seed``, ``candidates``. The seed used comes back in the ``X-Seed`` header.
* ``GET /v1/audio/voices``; ``POST /v1/audio/voices`` (multipart: clips in ``files``, optional ``name``) -> a new
  voice id.
* ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /`` (the page; its script under ``/page/``).

Every refusal is a JSON error in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx
status naming the problem (429 with Retry-After when the queue is full, 504 past the time limit); unexpected
failures are a 500 whose body holds no traceback (the traceback goes to the server log). A client that disconnects
cancels its request's work.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..api import TextToSpeech
from ..errors import InputTextError, TortoiseClvpError
from ..frontend.mel import OUTPUT_SAMPLE_RATE
from ..longform import STREAMING_FIRST_CHUNK
from ..presets import GenerationOptions, preset
from ..seeds import seed_or_draw
from . import formats
from .metrics import CONTENT_TYPE
from .scheduler import (
    AudioChunk,
    Event,
    Job,
    JobDone,
    JobFailed,
    JobTimeout,
    QueueFull,
    Scheduler,
    SpeechJob,
)
from .settings import ServeSettings
from .voices import Clip, VoiceBook

PAGE_DIR = Path(__file__).resolve().parent / "page"
MAX_BODY_BYTES = 1 << 20  # a speech request's JSON (4096 characters of text fit many times over)
MAX_NAME_CHARS = 64  # an uploaded voice's display name
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there
SUPPORTED_SPEED = 1.0
SAMPLE_RATE_HEADER = "X-Sample-Rate"  # the page reads the rate of streamed pcm from it
_MULTIPART_SLACK = 64 * 1024  # form boundaries and headers on top of the clips themselves
log = logging.getLogger("tortoise_clvp.serve")


class SpeechRequest(BaseModel):
    """The body of POST /v1/audio/speech (OpenAI's fields, then ours). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float = SUPPORTED_SPEED
    stream: bool = False
    preset: str | None = None
    seed: int | None = None
    candidates: int | None = None


class RequestError(Exception):
    """A request this server refuses: HTTP status, message, the offending parameter, extra headers."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class ClientGone(Exception):
    """The client disconnected while its request was being made."""


def error_response(status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(tts: TextToSpeech, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The app for a loaded model: its scheduler (`app.state.scheduler`) starts now and stops with the app. The
    settings are fitted to the model's own preset first (`ServeSettings.for_model`)."""
    settings = settings.for_model(tts.models.default_preset)
    scheduler = Scheduler(tts, settings)
    voices = VoiceBook(scheduler.tts, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        scheduler.close()

    app = FastAPI(title="tortoise_clvp", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.scheduler, app.state.voices, app.state.settings = scheduler, voices, settings

    @app.exception_handler(RequestError)
    async def _refused(_request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.message, error.param, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, *_first_problem(error.errors()))

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(500, f"internal error ({type(error).__name__}); the server log has the details")

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        try:
            params = SpeechRequest.model_validate(await _json_body(request))
        except ValidationError as error:
            scheduler.requests.inc(1, "bad_request")
            raise RequestError(400, *_first_problem(error.errors())) from None
        try:
            options, fmt, seed = _check(params, settings)
            conditioning = await run_in_threadpool(voices.conditioning, params.voice, seed)
        except RequestError:
            scheduler.requests.inc(1, "bad_request")
            raise
        except TortoiseClvpError as error:
            scheduler.requests.inc(1, "bad_request")
            raise RequestError(400, str(error), "voice") from None

        events: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        try:
            job = scheduler.submit(
                SpeechJob(params.input, conditioning, scheduler.fitted(options), seed,
                          STREAMING_FIRST_CHUNK if params.stream else None),
                lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            )
        except QueueFull as error:
            raise RequestError(429, str(error), headers={"Retry-After": str(error.retry_after_s)}) from None
        headers = {"X-Seed": str(seed), SAMPLE_RATE_HEADER: str(OUTPUT_SAMPLE_RATE)}
        try:
            first = await _next_event(events, request, job)
            if isinstance(first, JobFailed):
                raise _failure(first.error)
            if params.stream:
                return StreamingResponse(_stream(first, events, job, fmt), media_type=fmt.media_type, headers=headers)
            chunks = [first]
            while not isinstance(chunks[-1], JobDone):
                event = await _next_event(events, request, job)
                if isinstance(event, JobFailed):
                    raise _failure(event.error)
                chunks.append(event)
        except ClientGone:
            return Response(status_code=499)
        audio = [chunk.samples.numpy() for chunk in chunks if isinstance(chunk, AudioChunk)]
        content = await run_in_threadpool(formats.encode, np.concatenate(audio), audio_rate(chunks), fmt)
        return Response(content, media_type=fmt.media_type, headers=headers)

    @app.get("/v1/audio/voices")
    async def list_voices() -> dict[str, Any]:
        return {"voices": [asdict(voice) for voice in await run_in_threadpool(voices.list)]}

    @app.post("/v1/audio/voices")
    async def add_voice(request: Request) -> dict[str, Any]:
        clips, name = await _uploaded_clips(request, settings)
        try:
            voice = await run_in_threadpool(voices.add_upload, clips, name)
        except TortoiseClvpError as error:
            raise RequestError(400, str(error), "files") from None
        return asdict(voice)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "queue_depth": scheduler.queue_depth}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(scheduler.render_metrics(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
    return app


def _first_problem(errors: list[dict]) -> tuple[str, str | None]:
    """(message, parameter) of a validation error list's first entry: 'seed: Input should be a valid integer'."""
    if not errors:
        return "invalid request", None
    location = [str(part) for part in errors[0].get("loc", ())]
    where = ".".join(location) if location else "request body"
    return f"{where}: {errors[0].get('msg', 'invalid')}", location[0] if location else None


def audio_rate(chunks: list[Event]) -> int:
    return next(chunk.sample_rate for chunk in chunks if isinstance(chunk, AudioChunk))


async def _json_body(request: Request) -> Any:
    """The request's JSON, refusing bodies that are too large, not UTF-8 or not JSON."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise RequestError(413, f"the request body is {length} bytes; at most {MAX_BODY_BYTES} are taken")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"the request body is not valid UTF-8 (byte {error.start}); send UTF-8 JSON") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise RequestError(400, f"the request body is not JSON ({error}); send a JSON object") from None


def _check(params: SpeechRequest, settings: ServeSettings) -> tuple[GenerationOptions, formats.AudioFormat, int]:
    """The generation options, response format and seed a valid request asks for; RequestError otherwise."""
    text = params.input
    if not text.strip():
        raise RequestError(400, "input is empty; give the text to speak", "input")
    if len(text) > settings.max_text_chars:
        raise RequestError(400, f"input is {len(text)} characters; at most {settings.max_text_chars} are taken", "input")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, "input is not valid UTF-8 text (it holds a lone surrogate escape)", "input") from None
    name = params.preset or settings.preset_for(params.model)
    if name is None:
        served = ", ".join([*settings.models, settings.model_name])
        raise RequestError(400, f"model {params.model!r} is not served here; use one of {served}", "model")
    if params.speed != SUPPORTED_SPEED:
        raise RequestError(
            400, f"speed {params.speed:g} is not supported: speech comes at the model's own pace; send 1.0 or leave it out",
            "speed",
        )
    try:
        fmt = formats.audio_format(params.response_format)
        options = preset(name)
        seed = seed_or_draw(params.seed)
    except TortoiseClvpError as error:
        param = "response_format" if "response_format" in str(error) else "preset" if "preset" in str(error) else "seed"
        raise RequestError(400, str(error), param) from None
    if params.stream and not fmt.streamable:
        raise RequestError(400, f"stream sends {' or '.join(formats.STREAMABLE)}; {fmt.name} needs stream false", "stream")
    if params.candidates is not None:
        if not 1 <= params.candidates <= settings.max_candidates:
            raise RequestError(400, f"candidates must be from 1 to {settings.max_candidates}", "candidates")
        options = replace(options, decoding=options.decoding.with_candidates(params.candidates),
                          k=min(options.k, params.candidates))
    return options, fmt, seed


async def _next_event(events: asyncio.Queue[Event], request: Request, job: Job) -> Event:
    """The job's next event; cancels the job and raises ClientGone if the client disconnects meanwhile."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise ClientGone from None


async def _stream(first: Event, events: asyncio.Queue[Event], job: Job, fmt: formats.AudioFormat) -> AsyncIterator[bytes]:
    """The streamed body: a wav header if asked, then each chunk's 16-bit samples as it arrives. If the client
    goes away, the response is cancelled here and the job with it."""
    event = first
    try:
        if fmt.name == "wav":
            yield formats.wav_stream_header(event.sample_rate)
        while isinstance(event, AudioChunk):
            yield formats.pcm16(event.samples.numpy())
            event = await events.get()
        if isinstance(event, JobFailed):
            log.warning("stream ended early: %s", event.error)
    finally:
        job.cancel()  # a no-op once the job is done


def _failure(error: BaseException) -> RequestError:
    if isinstance(error, JobTimeout):
        return RequestError(504, str(error))
    if isinstance(error, TortoiseClvpError):
        return RequestError(400, str(error), "input" if isinstance(error, InputTextError) else None)
    log.error("speech request failed", exc_info=error)
    return RequestError(500, f"internal error while speaking ({type(error).__name__}); the server log has the details")


async def _uploaded_clips(request: Request, settings: ServeSettings) -> tuple[list[Clip], str | None]:
    """The clips (and optional name) of a multipart voice upload, refusing oversized or malformed ones early."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise RequestError(400, "send the clips as multipart/form-data, one or more files in the 'files' field", "files")
    limit = settings.max_upload_bytes * settings.max_upload_files + _MULTIPART_SLACK
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"the upload is {length} bytes; at most {limit} are taken "
                                f"({settings.max_upload_files} clips of {settings.max_upload_bytes} bytes)", "files")
    try:
        form = await request.form(max_files=settings.max_upload_files, max_fields=4)
    except HTTPException as error:
        raise RequestError(400, f"unreadable upload: {error.detail}", "files") from None
    clips, name = [], form.get("name")
    for key, value in form.multi_items():
        if key != "files" and key != "name":
            raise RequestError(400, f"unknown form field {key!r}; send 'files' (clips) and optionally 'name'", key)
        if key == "files":
            if isinstance(value, str):
                raise RequestError(400, "'files' must hold uploaded files, not text", "files")
            data = await value.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                raise RequestError(413, f"{value.filename} is over {settings.max_upload_bytes} bytes", "files")
            clips.append(Clip(value.filename or "", data))
    await form.close()
    if name is not None and (not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME_CHARS
                             or not name.isprintable()):
        raise RequestError(400, f"name must be printable text of 1 to {MAX_NAME_CHARS} characters", "name")
    return clips, name.strip() if isinstance(name, str) else None
