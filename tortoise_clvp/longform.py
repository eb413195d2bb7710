"""Long texts: split into sentences, speak each in the same voice, join the pieces; stream them or resume a run.

What the original's ``read.py`` does (split, generate per chunk, concatenate), with these choices:

* **One voice for the whole text.** The voice's :class:`Conditioning` is computed once, by
  ``tts.get_conditioning`` (clips longer than 6 s cropped from the fixed crop seed, as everywhere; see
  `tortoise_clvp.seeds`), and reused for every chunk, so the speaker cannot drift between chunks. A Conditioning
  passed in is used as is. It is computed only when a chunk actually needs generating (a fully resumed run never
  computes it).
* **Seeds.** Chunk ``i`` (0-based) is generated with ``chunk_seed(seed, i) = seed + 2 * i``.
  ``TextToSpeech.generate`` draws its token samples from ``seed`` and its waveform noise from ``seed + 1``, so the
  stride of 2 gives every chunk its own two random streams, and chunk 0 of a run is exactly
  ``tts.generate(chunk_text, conditioning, options, seed)``. The same text, voice, options and seed give the same
  audio, chunk by chunk. ``seed=None`` draws a run seed (reported back), except when resuming (below).
* **Joining.** Neighbouring chunks overlap by ``crossfade_ms`` (default :data:`CROSSFADE_MS`, 40 ms) with an
  equal-power crossfade (``cos``/``sin`` gains whose squares sum to 1, so the level holds steady across the seam),
  which removes the click a bare concatenation leaves. Tortoise ends and starts chunks on near silence, so the
  overlap only shortens the pause between sentences by a few tens of milliseconds. With ``gap_ms > 0`` the chunks
  do not overlap instead: the previous chunk fades out over ``crossfade_ms``, ``gap_ms`` of silence follows, and the
  next chunk fades in over ``crossfade_ms`` (useful when a longer pause between sentences is wanted). A chunk shorter
  than the fade (or than two fades) gets correspondingly shorter fades; nothing is ever dropped or read twice.
  Without a gap and with every chunk at least two fades long, the joined length is
  ``sum(chunk lengths) - (chunks - 1) * fade``; with a gap it is ``sum(chunk lengths) + (chunks - 1) * gap``.
* **Streaming** (:func:`stream_speech`) yields one :class:`SpeechChunk` per chunk as soon as it is generated (each
  still sampled and reranked by ``tts.generate``). With ``first_chunk_length`` the first chunk ends at the first
  sentence end after that many characters (:data:`STREAMING_FIRST_CHUNK`: the first sentence alone), so the first
  audio comes sooner; the rest is split as usual. The CLI's ``--stream`` and the server's streamed answers do that.
  Each chunk's ``piece`` holds the samples to play next: the crossfade with the previous chunk is already applied,
  and the last ``crossfade_ms`` of the chunk are held back until the next chunk arrives (the last chunk's piece
  runs to its end). So a player writes each piece straight after the previous one and never goes back;
  concatenating all pieces gives exactly :func:`speak_long`'s waveform, which is built by doing just that.
* **Resuming** (``work_dir``): each finished chunk is written there atomically as ``chunk_0000.wav`` (32-bit float
  wav, exact), then :data:`MANIFEST_NAME` (JSON, also written atomically) records the chunk texts, seeds, the options
  and voice fingerprints, and which chunks are done with their CLVP scores. A rerun with the same text, voice,
  options and seed reads the finished chunks back instead of generating them. When the folder holds a manifest for a
  *different* text, voice, options or seed, the run is refused with a :class:`WorkDirError` naming what differs
  (nothing is overwritten; use another folder or delete it), rather than silently starting over beside it. With
  ``seed=None`` and a manifest of the same text/voice/options, its seed is adopted, so re-running the same call
  resumes. An interrupted run (any exception, KeyboardInterrupt included) leaves only complete chunk files: every
  write goes to a hidden temporary file renamed into place, removed on failure. A chunk is counted done only once
  both its audio and the manifest saying so are on disk; a chunk file the manifest does not list is regenerated.
  The voice fingerprint hashes the clip files' (or tensors') contents, or the Conditioning's tensors; the model
  weights are not part of it, so use one folder per model.
* **Progress**: ``progress(stage, done, total)`` as in :mod:`tortoise_clvp.api`: ``"conditioning"`` once, the
  inner stages of each chunk prefixed by the chunk, e.g. ``"chunk 2/5: sampling"`` (see :data:`CHUNK_STAGE`), and
  ``("chunks", finished, count)`` after every chunk (generated or resumed).

Errors for bad inputs come before anything is generated: a text with nothing to speak (empty, only whitespace or
punctuation) or a chunk the model cannot take is an :class:`InputTextError`; a ``work_dir`` that is a file, cannot
be created or cannot be written is a :class:`WorkDirError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile
import torch
from torch import Tensor

from .api import Progress, Speech, TextToSpeech, Voice
from .atomic import write_bytes_atomic
from .errors import InputTextError, OptionsError, TortoiseClvpError
from .frontend.audio import save_audio
from .frontend.mel import OUTPUT_SAMPLE_RATE
from .frontend.text import split_and_recombine_text
from .pipeline.conditioning import Conditioning
from .presets import GenerationOptions
from .seeds import check_seed, seed_or_draw

__all__ = [
    "CHUNK_SEED_STRIDE",
    "CHUNK_STAGE",
    "CROSSFADE_MS",
    "DESIRED_LENGTH",
    "MANIFEST_NAME",
    "MAX_LENGTH",
    "STREAMING_FIRST_CHUNK",
    "LongSpeech",
    "SpeechChunk",
    "SpeechStream",
    "WorkDirError",
    "chunk_seed",
    "chunk_texts",
    "join_waveforms",
    "speak_long",
    "stream_speech",
]

CROSSFADE_MS = 40.0  # equal-power overlap between neighbouring chunks (or each fade's length when there is a gap)
DESIRED_LENGTH = 200  # characters per chunk the splitter aims for (the original's read.py defaults)
MAX_LENGTH = 300  # characters per chunk at most
STREAMING_FIRST_CHUNK = 1  # first_chunk_length when streaming: the first sentence alone, to make the first audio soon
CHUNK_SEED_STRIDE = 2  # generate() uses seed and seed + WAVEFORM_SEED_OFFSET (1); chunk i gets seed + 2 * i
CHUNK_STAGE = "chunk {index}/{count}: {stage}"  # how inner progress stages are named (index is 1-based)
MANIFEST_NAME = "manifest.json"
CHUNK_FILE = "chunk_{index:04d}.wav"
_MANIFEST_FORMAT = 1


class WorkDirError(TortoiseClvpError):
    """The resume folder is unusable (a file, not writable) or holds another run's chunks."""


def chunk_seed(seed: int, index: int) -> int:
    """The seed chunk `index` (0-based) of a run with `seed` is generated with: ``seed + 2 * index``."""
    return seed + CHUNK_SEED_STRIDE * index


# Results ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechChunk:
    """One chunk of a long text, as streamed.

    index: 0-based position; count: how many chunks the text has. text / seed: what was spoken, with which seed.
    waveform: the chunk's whole (samples,) audio (its best candidate). piece: the samples to play after the previous
    chunk's piece (crossfade applied, the tail held back for the next chunk; see the module notes).
    scores: CLVP scores of every candidate in sampling order; best: indices of the best `k`, best first.
    resumed: read back from `work_dir` instead of generated (then `speech` is None and timings are empty).
    speech: the full `Speech` (all `k` waveforms, the candidates) when generated in this run.
    """

    index: int
    count: int
    text: str
    seed: int
    waveform: Tensor
    piece: Tensor
    sample_rate: int
    scores: Tensor
    best: Tensor
    resumed: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    speech: Speech | None = None

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


@dataclass(frozen=True)
class LongSpeech:
    """A long text spoken chunk by chunk: `waveform` is the joined (samples,) audio at `sample_rate`.

    chunks: every chunk's text, seed, own waveform and candidate scores. timings: seconds per stage summed over the
    chunks generated in this run, with the one conditioning computation under "conditioning" and the wall-clock
    time of the whole run under "total".
    """

    waveform: Tensor
    sample_rate: int
    chunks: list[SpeechChunk]
    seed: int
    timings: dict[str, float]

    @property
    def texts(self) -> list[str]:
        return [chunk.text for chunk in self.chunks]

    @property
    def seeds(self) -> list[int]:
        return [chunk.seed for chunk in self.chunks]

    @property
    def waveforms(self) -> list[Tensor]:
        return [chunk.waveform for chunk in self.chunks]

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    def save(self, path: str | os.PathLike) -> Path:
        """Write the joined audio atomically; the format follows the suffix (wav, flac, ogg)."""
        return save_audio(path, self.waveform, self.sample_rate)

    @classmethod
    def from_chunks(
        cls, chunks: Sequence[SpeechChunk], seed: int, timings: dict[str, float] | None = None
    ) -> "LongSpeech":
        """Every chunk of one streamed run, in order, joined: the chunks' pieces concatenated (the crossfades are
        already in them). timings: the chunks' stages summed, plus the given ones (e.g. the stream's conditioning)."""
        if not chunks:
            raise OptionsError("no chunks to join; stream at least one chunk first")
        summed: dict[str, float] = dict(timings or {})
        for chunk in chunks:
            for stage, seconds in chunk.timings.items():
                summed[stage] = summed.get(stage, 0.0) + seconds
        waveform = torch.cat([chunk.piece for chunk in chunks])
        return cls(waveform, chunks[0].sample_rate, list(chunks), seed, summed)


# Joining ------------------------------------------------------------------------------------------------------------
def _fade_gains(length: int) -> tuple[Tensor, Tensor]:
    """Equal-power (fade_out, fade_in) gains over `length` samples: cos and sin of a quarter turn, sampled at
    the sample centres, so fade_out**2 + fade_in**2 == 1 everywhere."""
    angle = (torch.arange(length, dtype=torch.float64) + 0.5) / length * (math.pi / 2)
    return torch.cos(angle).float(), torch.sin(angle).float()


def _samples(ms: float, sample_rate: int, name: str) -> int:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
        raise OptionsError(f"{name} must be a finite number of milliseconds >= 0, got {ms!r}")
    return round(ms * sample_rate / 1000)


class _Joiner:
    """Turns chunk waveforms into consecutive non-overlapping pieces, holding back each chunk's tail until the
    next chunk is known (see the module notes for the rules)."""

    def __init__(self, fade: int, gap: int):
        self.fade, self.gap = fade, gap
        self.pending = torch.zeros(0)
        self.started = False

    def push(self, wave: Tensor, last: bool) -> Tensor:
        wave = wave.detach().float().cpu().reshape(-1)
        pending, parts = self.pending, []
        if not self.started:
            head = 0
        elif self.gap == 0:  # overlap the held-back tail with the start of this chunk
            head = min(pending.numel(), wave.numel())
            fade_out, fade_in = _fade_gains(head)
            kept = pending.numel() - head
            parts += [pending[:kept], pending[kept:] * fade_out + wave[:head] * fade_in]
        else:  # fade the tail out, a silence, fade this chunk in
            head = min(self.fade, wave.numel())
            fade_out, fade_in = _fade_gains(pending.numel())[0], _fade_gains(head)[1]
            parts += [pending * fade_out, torch.zeros(self.gap), wave[:head] * fade_in]
        held = 0 if last else min(self.fade, wave.numel() - head)
        parts.append(wave[head : wave.numel() - held])
        self.pending, self.started = wave[wave.numel() - held :], True
        return torch.cat(parts)


def join_waveforms(
    waveforms: Sequence[Tensor], sample_rate: int, crossfade_ms: float = CROSSFADE_MS, gap_ms: float = 0.0
) -> Tensor:
    """Join (samples,) waveforms as `speak_long` does: equal-power crossfades of `crossfade_ms`, or with `gap_ms` > 0
    a fade out, that much silence and a fade in. The same code as streaming, so the results agree exactly."""
    joiner = _Joiner(_samples(crossfade_ms, sample_rate, "crossfade_ms"), _samples(gap_ms, sample_rate, "gap_ms"))
    pieces = [joiner.push(wave, index == len(waveforms) - 1) for index, wave in enumerate(waveforms)]
    return torch.cat(pieces) if pieces else torch.zeros(0)


# Fingerprints -------------------------------------------------------------------------------------------------------
def _options_fingerprint(options: GenerationOptions) -> str:
    described = json.dumps(dataclasses.asdict(options), sort_keys=True, default=repr)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _hash_tensor(digest, tensor: Tensor) -> None:
    array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    digest.update(str(tuple(array.shape)).encode())
    digest.update(array.tobytes())


def _voice_fingerprint(voice: Voice) -> str:
    """A hash of what the voice is made of: clip files' bytes, clip tensors' samples, or a Conditioning's latents."""
    digest = hashlib.sha256()
    if isinstance(voice, Conditioning):
        digest.update(b"conditioning")
        _hash_tensor(digest, voice.autoregressive)
        if voice.diffusion is not None:
            _hash_tensor(digest, voice.diffusion)
        return digest.hexdigest()[:16]
    clips = [voice] if isinstance(voice, (str, os.PathLike, Tensor)) else list(voice)
    for clip in clips:
        if isinstance(clip, Tensor):
            digest.update(b"tensor")
            _hash_tensor(digest, clip)
        else:
            digest.update(b"file")
            try:
                digest.update(Path(clip).read_bytes())
            except OSError:  # let get_conditioning raise its clear AudioError when the clip is needed
                digest.update(os.fsdecode(clip).encode())
    return digest.hexdigest()[:16]


# Work folder --------------------------------------------------------------------------------------------------------
def _prepare_work_dir(work_dir: str | os.PathLike) -> Path:
    """Create the folder if needed and prove it writable, or raise a WorkDirError saying what is wrong."""
    folder = Path(work_dir)
    if folder.exists() and not folder.is_dir():
        raise WorkDirError(f"work_dir {folder} is a file, not a folder; give a folder to keep the finished chunks in")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:  # deleted on close: proves the folder takes new files
            probe.write(b"probe")
    except OSError as error:
        raise WorkDirError(
            f"cannot use work_dir {folder} ({error.strerror or error}); give a folder that can be created and written"
        ) from error
    return folder


@dataclass
class _Manifest:
    """What `work_dir/manifest.json` holds: the run's identity and the finished chunks."""

    texts: list[str]
    seed: int
    options: str
    voice: str
    sample_rate: int
    done: dict[int, dict] = field(default_factory=dict)  # index -> {"file", "samples", "scores", "best"}

    def identity(self) -> dict:
        return {key: getattr(self, key) for key in ("texts", "seed", "options", "voice", "sample_rate")}

    def to_json(self) -> bytes:
        chunks = [
            {"index": i, "text": text, "seed": chunk_seed(self.seed, i), "done": i in self.done, **self.done.get(i, {})}
            for i, text in enumerate(self.texts)
        ]
        body = {"format": _MANIFEST_FORMAT, **self.identity(), "chunks": chunks}
        return (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def read(cls, path: Path) -> "_Manifest":
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            if body.get("format") != _MANIFEST_FORMAT:
                raise ValueError(f"unknown manifest format {body.get('format')!r}")
            done = {
                int(chunk["index"]): {key: chunk[key] for key in ("file", "samples", "scores", "best")}
                for chunk in body["chunks"]
                if chunk.get("done")
            }
            texts, seed, sample_rate = list(body["texts"]), int(body["seed"]), int(body["sample_rate"])
            return cls(texts, seed, str(body["options"]), str(body["voice"]), sample_rate, done)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WorkDirError(
                f"{path} is not a readable long-form manifest ({error}); delete it (and the chunk files beside it) "
                "or use another work_dir"
            ) from error


def _differences(found: _Manifest, wanted: _Manifest, seed_given: bool) -> list[str]:
    names = {
        "texts": "the text (its chunks)",
        "seed": "the seed",
        "options": "the generation options",
        "voice": "the voice",
        "sample_rate": "the sample rate",
    }
    mine, theirs = wanted.identity(), found.identity()
    return [names[key] for key in names if mine[key] != theirs[key] and (key != "seed" or seed_given)]


def _read_chunk(folder: Path, record: dict) -> Tensor | None:
    """A finished chunk's samples, or None if its file is missing or not what the manifest says."""
    path = folder / str(record.get("file"))
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.SoundFileError):
        return None
    if rate != OUTPUT_SAMPLE_RATE or data.shape[0] != record.get("samples"):
        return None
    return torch.from_numpy(np.ascontiguousarray(data[:, 0]))


# Streaming ----------------------------------------------------------------------------------------------------------
class SpeechStream:
    """An iterator over a long text's chunks, each a :class:`SpeechChunk`, generated as they are asked for.

    Built by :func:`stream_speech`, which checks everything (text, options, work folder) before returning; nothing
    is generated until the first chunk is requested. `texts`, `seeds`, `seed` and `sample_rate` are known up front;
    `timings["conditioning"]` is filled in once the voice has been conditioned.
    """

    def __init__(
        self,
        tts: TextToSpeech,
        texts: list[str],
        voice: Voice,
        options: GenerationOptions,
        seed: int,
        folder: Path | None,
        manifest: _Manifest | None,
        fade: int,
        gap: int,
        progress: Progress | None,
    ):
        self.tts, self.texts, self.voice, self.options, self.seed = tts, texts, voice, options, seed
        self.seeds = [chunk_seed(seed, index) for index in range(len(texts))]
        self.sample_rate = OUTPUT_SAMPLE_RATE
        self.work_dir = folder
        self.timings: dict[str, float] = {}
        self._manifest, self._fade, self._gap, self._progress = manifest, fade, gap, progress
        self._conditioning = voice if isinstance(voice, Conditioning) else None
        self._chunks = self._generate()

    def __iter__(self) -> "SpeechStream":
        return self

    def __next__(self) -> SpeechChunk:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early (what is finished stays in `work_dir`)."""
        self._chunks.close()

    def _conditioned(self) -> Conditioning:
        if self._conditioning is None:
            start = time.perf_counter()
            self._conditioning = self.tts.get_conditioning(self.voice, progress=self._progress)
            self.timings["conditioning"] = time.perf_counter() - start
        return self._conditioning

    def _report(self, index: int) -> Progress | None:
        progress, count = self._progress, len(self.texts)
        if progress is None:
            return None

        def report(stage: str, done: int, total: int) -> None:
            progress(CHUNK_STAGE.format(index=index + 1, count=count, stage=stage), done, total)

        return report

    def _resumed(self, index: int) -> tuple[Tensor, Tensor, Tensor] | None:
        if self._manifest is None or index not in self._manifest.done:
            return None
        record = self._manifest.done[index]
        wave = _read_chunk(self.work_dir, record)
        if wave is None:
            return None
        return wave, torch.tensor(record["scores"], dtype=torch.float32), torch.tensor(record["best"], dtype=torch.long)

    def _save(self, index: int, wave: Tensor, scores: Tensor, best: Tensor) -> None:
        name = CHUNK_FILE.format(index=index)
        save_audio(self.work_dir / name, wave, self.sample_rate)  # the audio first, then the manifest saying it is done
        record = {"file": name, "samples": int(wave.numel()), "scores": scores.tolist(), "best": best.tolist()}
        self._manifest.done[index] = record
        write_bytes_atomic(self.work_dir / MANIFEST_NAME, self._manifest.to_json())

    def _generate(self) -> Iterator[SpeechChunk]:
        joiner, count = _Joiner(self._fade, self._gap), len(self.texts)
        if self._manifest is not None:  # record the run before generating, so an interrupted run is recognised
            write_bytes_atomic(self.work_dir / MANIFEST_NAME, self._manifest.to_json())
        for index, (text, seed) in enumerate(zip(self.texts, self.seeds)):
            found = self._resumed(index)
            if found is not None:
                wave, scores, best = found
                speech, timings = None, {}
            else:
                speech = self.tts.generate(text, self._conditioned(), self.options, seed, self._report(index))
                wave, timings = speech.waveform.float().cpu(), dict(speech.timings)
                scores, best = speech.candidates.ranked.scores.float().cpu(), speech.candidates.best.cpu()
                if self._manifest is not None:
                    self._save(index, wave, scores, best)
            piece = joiner.push(wave, index == count - 1)
            if self._progress is not None:
                self._progress("chunks", index + 1, count)
            yield SpeechChunk(
                index, count, text, seed, wave, piece, self.sample_rate, scores, best, found is not None, timings, speech
            )


def chunk_texts(
    text: str, desired_length: int = DESIRED_LENGTH, max_length: int = MAX_LENGTH, first_chunk_length: int | None = None
) -> list[str]:
    """The chunks a long text is spoken in: `split_and_recombine_text(text, desired_length, max_length)`, whose
    first chunk is split again at `first_chunk_length` (1..desired_length; None: not) when given, its remainder
    becoming the second chunk."""
    if first_chunk_length is not None and not 0 < first_chunk_length <= desired_length:
        raise OptionsError(f"first_chunk_length must be 1..desired_length ({desired_length}), got {first_chunk_length}")
    texts = split_and_recombine_text(text, desired_length, max_length)
    if first_chunk_length is None or not texts:
        return texts
    head = split_and_recombine_text(texts[0], first_chunk_length, max_length)
    return head[:1] + ([" ".join(head[1:])] if len(head) > 1 else []) + texts[1:]


def stream_speech(
    tts: TextToSpeech,
    text: str,
    voice: Voice,
    options: GenerationOptions | str | None = None,
    seed: int | None = None,
    work_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    crossfade_ms: float = CROSSFADE_MS,
    gap_ms: float = 0.0,
    desired_length: int = DESIRED_LENGTH,
    max_length: int = MAX_LENGTH,
    first_chunk_length: int | None = None,
) -> SpeechStream:
    """Speak a long `text` in `voice` one chunk at a time: split it with `chunk_texts(text, desired_length,
    max_length, first_chunk_length)`, then yield a :class:`SpeechChunk` per chunk as soon as `tts.generate` has made
    it (pass `first_chunk_length=STREAMING_FIRST_CHUNK` to have the first sentence spoken alone, soonest).

    Write each chunk's `piece` after the previous one to play or save the whole text gaplessly; the pieces add up to
    `speak_long`'s waveform. See the module notes for seeds, joining, `work_dir` resuming and progress stages.
    Raises before generating anything: InputTextError (nothing to speak, a chunk the model cannot take),
    OptionsError, CheckpointError (no diffusion decoder / vocoder), WorkDirError. The checks are
    `TextToSpeech.check_generation` and, for every chunk, `TextToSpeech.check_text`: the ones `generate` runs.
    """
    options = tts.check_generation(voice, options)
    check_seed(seed)
    fade = _samples(crossfade_ms, OUTPUT_SAMPLE_RATE, "crossfade_ms")
    gap = _samples(gap_ms, OUTPUT_SAMPLE_RATE, "gap_ms")

    texts = chunk_texts(text, desired_length, max_length, first_chunk_length)
    if not texts:
        raise InputTextError(
            "the text has nothing to speak: it is empty or only whitespace and punctuation; give at least one word"
        )
    for index, chunk in enumerate(texts):  # catch an unspeakable or too long chunk now, not halfway through
        try:
            tts.check_text(chunk, options.decoding)
        except InputTextError as error:
            shown = chunk if len(chunk) <= 60 else chunk[:60] + "…"
            hint = " (lower max_length)" if "at most" in str(error) else ""
            raise InputTextError(f"chunk {index + 1}/{len(texts)} {shown!r}: {error}{hint}") from error

    folder = manifest = None
    if work_dir is not None:
        folder = _prepare_work_dir(work_dir)
        wanted = _Manifest(
            texts, 0 if seed is None else seed, _options_fingerprint(options), _voice_fingerprint(voice), OUTPUT_SAMPLE_RATE
        )
        path = folder / MANIFEST_NAME
        if path.exists():
            found = _Manifest.read(path)
            differences = _differences(found, wanted, seed is not None)
            if differences:
                raise WorkDirError(
                    f"work_dir {folder} holds the chunks of another run: {', '.join(differences)} differ(s). "
                    "Use another work_dir, or delete this one to start over"
                )
            wanted.seed, wanted.done = found.seed, found.done
        elif seed is None:
            wanted.seed = seed_or_draw(None)
        seed, manifest = wanted.seed, wanted
    seed = seed_or_draw(seed)
    return SpeechStream(tts, texts, voice, options, seed, folder, manifest, fade, gap, progress)


def speak_long(
    tts: TextToSpeech,
    text: str,
    voice: Voice,
    options: GenerationOptions | str | None = None,
    seed: int | None = None,
    work_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    crossfade_ms: float = CROSSFADE_MS,
    gap_ms: float = 0.0,
    desired_length: int = DESIRED_LENGTH,
    max_length: int = MAX_LENGTH,
    first_chunk_length: int | None = None,
) -> LongSpeech:
    """Speak a long `text` in `voice` and join the chunks: :func:`stream_speech` run to the end, its pieces
    concatenated. Arguments, errors and behaviour as there (module notes: seeds, joining, resuming)."""
    start = time.perf_counter()
    stream = stream_speech(
        tts, text, voice, options, seed, work_dir, progress, crossfade_ms, gap_ms, desired_length, max_length,
        first_chunk_length,
    )
    chunks = list(stream)
    result = LongSpeech.from_chunks(chunks, stream.seed, stream.timings)
    result.timings["total"] = time.perf_counter() - start
    return result
