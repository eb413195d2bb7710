"""`clvp-tts`: the command line. It parses, calls the API and owns all output; no tensor code lives here.

Heavy imports (torch, the models) happen inside the commands once the arguments are checked, so `--help`, `voices`
and argument errors start in a fraction of a second. Speech comes from one library entry, `stream_speech`, which
yields the text chunk by chunk (short texts are one chunk); the library reports progress through a callback and
`_Progress` draws it.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from .seeds import MAX_SEED
from .voices import AUDIO_SUFFIXES

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Tortoise text-to-speech, fast and faithful.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmark runs.")
app.add_typer(bench_app, name="bench")

DTYPES = ("float32", "bfloat16", "float16")
STDOUT = "-"
INTERRUPTED = 130  # the shell's exit status for Ctrl-C
BUNDLED_MODEL_NOTE = (
    "note: using the small bundled model (for trying the engine); for the released Tortoise models run "
    "`clvp-tts download` or pass --models-dir DIR"
)

ModelsDir = Annotated[
    Optional[Path],
    typer.Option("--models-dir", help="Model directory (default $TORTOISE_MODELS_DIR, then a download, the Hugging "
                 "Face cache, the bundled model)."),
]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps ...")]
Seed = Annotated[Optional[int], typer.Option(min=0, max=MAX_SEED, help="Seed; the same seed gives the same result.")]
VoicesDir = Annotated[list[Path], typer.Option(help="Extra folder(s) of voices (also $TORTOISE_VOICES_DIR).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
PRESET_HELP = (
    "ultra_fast, fast, standard, high_quality, ultra_fast_dpm, fast_dpm, ultra_fast_ddim (default: the model's own: "
    "ultra_fast_ddim for the bundled model, fast for the released models)."
)


def _fail(error: Exception | str, code: int = 2) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Our errors become one red line and exit status 2; Ctrl-C becomes a short note and status 130."""
    from .errors import TortoiseClvpError

    try:
        yield
    except TortoiseClvpError as error:
        _fail(error)
    except KeyboardInterrupt:
        _fail("interrupted; nothing half-written was left behind", INTERRUPTED)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        _fail(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def _load(models_dir: Optional[Path], device: str, dtype: str = "float32", compile: bool = False,
          progress: Optional["_Progress"] = None):
    """The models, found the way `TextToSpeech.from_pretrained` finds them (this is where torch is imported)."""
    from .api import TextToSpeech
    from .weights.discovery import resolve_models_dir

    resolved = resolve_models_dir(models_dir)
    if resolved.bundled:
        if progress is not None and progress.bar is not None:
            progress.note(BUNDLED_MODEL_NOTE)  # printed above the live progress display
        else:
            typer.echo(BUNDLED_MODEL_NOTE, err=True)
    return TextToSpeech.from_local(resolved.path, device, dtype, compile, progress)


def _read_text(text: Optional[str], text_file: Optional[Path]) -> str:
    if text is not None and text_file is not None:
        _fail("give the text as an argument or with --text-file, not both")
    if text_file is not None:
        try:
            return text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            _fail(f"cannot read --text-file {text_file}: {error}")
    if text == STDOUT or (text is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if text is None:
        _fail("no text: pass it as an argument, with --text-file FILE, or on standard input")
    return text


def _output_paths(output: str, keep: int, overwrite: bool) -> list[Path]:
    """Where the best and the next `keep - 1` candidates go; checked before any work is done."""
    path = Path(output).expanduser()
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        _fail(f"output {path} must end in {', '.join(AUDIO_SUFFIXES)} (the suffix picks the format)")
    if not path.parent.is_dir():
        _fail(f"the folder {path.parent} does not exist; create it or choose another output path")
    if not os.access(path.parent, os.W_OK):
        _fail(f"the folder {path.parent} is not writable; choose another output path")
    paths = [path] + [path.with_name(f"{path.stem}_{rank}{path.suffix}") for rank in range(2, keep + 1)]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        _fail(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose another output")
    return paths


def _voice_spec(voice: list[str], voices_dir: list[Path]):
    """One --voice is any spec; several must be clips, which then form one voice. Needs no torch."""
    from .voices import resolve_voice

    if len(voice) == 1:
        return resolve_voice(voice[0], voices_dir)
    specs = [resolve_voice(v, voices_dir) for v in voice]
    if any(spec.kind != "file" for spec in specs):
        _fail("several --voice options must all be audio files (use a folder, a name or 'a&b' otherwise)")
    clips = tuple(clip for spec in specs for clip in spec.clips)
    return replace(specs[0], name="+".join(spec.name for spec in specs), kind="folder", clips=clips)


class _Progress:
    """Draws the library's progress reports with rich on standard error; silent with --quiet.

    One row per stage (loading models, conditioning, sampling, candidates finished, reranking, diffusion,
    vocoder, chunks) with done/total, the time spent and an estimate of the time left. For long texts the library
    names stages "chunk i/n: stage"; the row of a stage then says which chunk it is on and restarts with each chunk.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.rows: dict[str, tuple[int, int]] = {}  # stage -> (rich task id, last done)
        self.bar = None

    def __enter__(self) -> "_Progress":
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True),
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        chunk, _, name = stage.rpartition(": ")
        description = f"{name} ({chunk})" if chunk else name
        row = self.rows.get(name)
        if row is None:
            task = self.bar.add_task(description, total=total)
        else:
            task, last = row
            if done < last:  # the next chunk: start the row (and its time estimate) again
                self.bar.reset(task, total=total, description=description)
        self.bar.update(task, completed=done, total=total, description=description)
        self.rows[name] = (task, done)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message, markup=False, highlight=False, soft_wrap=True)  # one line, unwrapped
        elif not self.quiet:
            typer.echo(message, err=True)


def _generation_options(preset_name, faithful, candidates, max_tokens, sampler, steps, keep, prune=None):
    """The preset with the command line's overrides."""
    from .presets import preset

    options = preset(preset_name, faithful)
    decoding, diffusion = options.decoding, options.diffusion
    if candidates is not None:
        decoding = decoding.with_candidates(candidates)
    if max_tokens is not None:
        decoding = replace(decoding, max_new_tokens=max_tokens)
    if sampler is not None or steps is not None:
        diffusion = replace(diffusion, sampler=sampler or diffusion.sampler, steps=steps or diffusion.steps)
    return replace(options, decoding=decoding, diffusion=diffusion, k=keep, prune=prune or options.prune)


@app.command()
def speak(
    text: Annotated[Optional[str], typer.Argument(help="What to say ('-' or nothing: read standard input).")] = None,
    voice: Annotated[list[str], typer.Option("--voice", "-v", help="Clip, folder, voice name, 'a&b' (quote it in a shell) or 'random'; repeat for several clips.")] = ["piper_joe"],  # noqa: B006
    output: Annotated[str, typer.Option("--output", "-o", help="Output file (.wav/.flac/.ogg), or '-' for raw 16-bit PCM on stdout.")] = "speech.wav",
    text_file: Annotated[Optional[Path], typer.Option(help="Read the text from this UTF-8 file.")] = None,
    preset_name: Annotated[Optional[str], typer.Option("--preset", help=PRESET_HELP)] = None,
    candidates: Annotated[Optional[int], typer.Option("--candidates", min=1, help="Candidates to sample (default: the preset's).")] = None,
    keep: Annotated[int, typer.Option("--keep", "-k", min=1, help="Write the K best candidates (OUT, OUT_2, ...).")] = 1,
    seed: Seed = None,
    sampler: Annotated[Optional[str], typer.Option(help="Diffusion sampler: p, ddim, dpm++2m (default: the preset's).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Diffusion steps (default: the preset's).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Speech tokens per candidate at most (default 500).")] = None,
    prune_at: Annotated[Optional[int], typer.Option(min=1, help="Early pruning: after this many tokens, finish only the best --prune-keep of the candidates.")] = None,
    prune_keep: Annotated[Optional[float], typer.Option(help="Fraction of the candidates finished when pruning (default 0.25).")] = None,
    prune_score: Annotated[Optional[str], typer.Option(help="What pruning ranks by: logprob (the decoder's mean log-probability so far; the default) or clvp.")] = None,
    models_dir: ModelsDir = None,
    voices_dir: VoicesDir = [],  # noqa: B006
    device: Device = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 for the decoders (bfloat16 is slower on CPUs without AVX512-BF16).")] = "float32",
    faithful: Annotated[bool, typer.Option(help="Reproduce the original's accidental sampling behaviours (top_k=50 ...).")] = False,
    compile: Annotated[bool, typer.Option(help="torch.compile the diffusion denoiser, and the decoder step off CPU float32 (up to a minute to start; on CPU the denoiser gains only 1-5%).")] = False,
    stream: Annotated[bool, typer.Option(help="Report and keep each chunk as soon as it is ready (with -o -, play as it comes); the first sentence is spoken alone, so it comes soonest.")] = False,
    chunk_chars: Annotated[int, typer.Option(min=20, help="Long texts are split into chunks of about this many characters.")] = 200,
    work_dir: Annotated[Optional[Path], typer.Option(help="Keep finished chunks here to resume (default: beside the output).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
    quiet: Quiet = False,
) -> None:
    """Speak TEXT in a voice and write the audio."""
    with _clear_errors():
        words = _read_text(text, text_file)
        to_stdout = output == STDOUT
        if to_stdout and keep > 1:
            _fail("--keep needs an output file")
        paths = [] if to_stdout else _output_paths(output, keep, overwrite)
        _check_dtype(dtype)
        prune = None
        given = {name: value for name, value in (("keep", prune_keep), ("score", prune_score)) if value is not None}
        if prune_at is None and given:
            _fail("--prune-keep and --prune-score need --prune-at (the tokens after which to prune)")
        if prune_at is not None:
            from .pipeline.pruning import PruneOptions

            prune = PruneOptions(at_tokens=prune_at, **given)  # its own defaults for what is not given
        spec = _voice_spec(voice, voices_dir)
        started = time.perf_counter()
        with _Progress(quiet or to_stdout) as progress:
            def options_of(name: str):
                return _generation_options(name, faithful, candidates, max_tokens, sampler, steps, keep, prune)

            options = None if preset_name is None else options_of(preset_name)  # a bad name fails before loading
            tts = _load(models_dir, device, dtype, compile, progress)
            options = options or options_of(tts.default_preset)
            from .longform import STREAMING_FIRST_CHUNK, stream_speech
            from .voices import voice_latents

            latents = voice_latents(tts, spec, seed=seed if spec.is_random else None, extra_dirs=voices_dir,
                                    progress=progress)
            if latents.cache_error:
                progress.note(f"note: voice latents not cached ({latents.cache_error})")
            folder = None
            if not to_stdout and keep == 1:  # finished chunks are kept here until the run completes (resuming)
                folder = work_dir if work_dir is not None else paths[0].with_name(f".{paths[0].name}.chunks")
            chunks = stream_speech(tts, words, latents.conditioning, options, seed, folder, progress,
                                   desired_length=chunk_chars, max_length=chunk_chars * 3 // 2,
                                   first_chunk_length=STREAMING_FIRST_CHUNK if stream else None)
            if keep > 1 and len(chunks.texts) > 1:
                _fail(f"--keep {keep} works for a text that fits one chunk; this one splits into {len(chunks.texts)}")
            if to_stdout:
                _write_pcm(chunks)
                return
            written, duration = _write_files(chunks, paths, stream, progress)
            if folder is not None:
                _remove_work_dir(folder)
        elapsed = time.perf_counter() - started
        typer.echo(f"wrote {', '.join(str(p) for p in written)}: {duration:.2f} s of audio in {elapsed:.1f} s "
                   f"(real-time factor {elapsed / max(duration, 1e-9):.2f}), seed {chunks.seed}")


def _write_pcm(chunks) -> None:
    """Raw little-endian 16-bit PCM at 24 kHz, chunk by chunk as each is ready (pipe it into a player)."""
    from .frontend.audio import pcm16_bytes

    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(pcm16_bytes(chunk.piece))
        out.flush()


def _write_files(chunks, paths: list[Path], stream: bool, progress: _Progress) -> tuple[list[Path], float]:
    """Every chunk joined into paths[0], or with --keep K the K best candidates of a one-chunk text into the paths;
    returns (paths written, seconds of audio)."""
    from .longform import LongSpeech

    finished = []
    for chunk in chunks:
        finished.append(chunk)
        if stream:
            progress.note(f"chunk {chunk.index + 1}/{chunk.count}: {chunk.duration:.2f} s"
                          f"{' (resumed)' if chunk.resumed else ''}: {chunk.text[:60]}")
    if len(paths) > 1:  # --keep: one chunk, generated in this run (no work folder, so never resumed)
        speech = finished[0].speech
        return [speech.save(path, index) for index, path in enumerate(paths)], speech.duration
    joined = LongSpeech.from_chunks(finished, chunks.seed)
    return [joined.save(paths[0])], joined.duration


def _remove_work_dir(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@app.command()
def voices(voices_dir: VoicesDir = []) -> None:  # noqa: B006
    """List the bundled and user voices."""
    from .voices import list_voices

    with _clear_errors():
        found = list_voices(voices_dir)
    if not found:
        typer.echo("no voices found; put a folder of clips in a --voices-dir or $TORTOISE_VOICES_DIR")
        return
    width = max(len(v.name) for v in found)
    for v in found:
        typer.echo(f"{v.name:<{width}}  {v.source:<7}  {len(v.clips)} clip(s)  {v.folder}")


@app.command()
def latents(
    voice: Annotated[str, typer.Argument(help="Clip, folder, voice name or 'a&b'.")],
    models_dir: ModelsDir = None,
    voices_dir: VoicesDir = [],  # noqa: B006
    device: Device = "cpu",
) -> None:
    """Precompute a voice's conditioning latents into the cache."""
    from .voices import precompute_latents, resolve_voice

    with _clear_errors():
        spec = resolve_voice(voice, voices_dir)
        tts = _load(models_dir, device)
        path = precompute_latents(tts, spec)
    typer.echo(f"cached {voice} -> {path}")


@app.command()
def download(
    destination: Annotated[Optional[Path], typer.Option("--dest", help="Folder to download into.")] = None,
    layout: Annotated[str, typer.Option(help="'tortoise' (original files) or 'huggingface' (CLVP layout).")] = "tortoise",
) -> None:
    """Download the released model files (needs network access to the Hugging Face hub)."""
    from .weights.download import fetch_models

    with _clear_errors():
        result = fetch_models(destination, layout, show_progress=True)
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"model files in {result.destination}")


@app.command()
def info(
    directory: Annotated[
        Optional[Path], typer.Argument(help="A model directory (default: the one the other commands would use).")
    ] = None,
) -> None:
    """Show what a model directory holds: layout, files, sizes, parameter counts, usable stages."""
    from .weights.discovery import MODEL_SOURCES, resolve_models_dir
    from .weights.info import describe_model_dir, format_info
    from .weights.native import MODEL_CARD_FILE

    with _clear_errors():
        if directory is None:
            resolved = resolve_models_dir()
            typer.echo(f"Found through {MODEL_SOURCES[resolved.source]}.")
            directory = resolved.path
        typer.echo(format_info(describe_model_dir(directory)))
        card = Path(directory) / MODEL_CARD_FILE
        if card.is_file():
            typer.echo(f"\nModel card (data, recipe, measured quality): {card}")


@app.command()
def candidates(
    text: Annotated[str, typer.Argument(help="What to say.")],
    voice: Annotated[list[str], typer.Option("--voice", "-v", help="Clip, folder, voice name, 'a&b' or 'random'.")],
    models_dir: ModelsDir = None,
    num_candidates: Annotated[int, typer.Option("--candidates", "-n", min=1, help="Candidates to sample.")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Candidates decoded together.")] = 16,
    keep: Annotated[int, typer.Option("--keep", "-k", min=1, help="Best candidates to compute latents for.")] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Speech tokens per candidate at most.")] = 500,
    seed: Seed = None,
    voices_dir: VoicesDir = [],  # noqa: B006
    device: Device = "cpu",
    quiet: Quiet = False,
) -> None:
    """Sample speech-token candidates for TEXT and rank them with CLVP (no audio)."""
    with _clear_errors():
        spec = _voice_spec(voice, voices_dir)
        with _Progress(quiet) as progress:
            from .pipeline.decoding import DecodingOptions
            from .voices import voice_latents

            options = DecodingOptions(num_candidates=num_candidates, batch_size=batch_size, max_new_tokens=max_tokens)
            tts = _load(models_dir, device, progress=progress)
            conditioning = voice_latents(tts, spec, seed=seed if spec.is_random else None, progress=progress).conditioning
            result = tts.candidates(text, conditioning, options, k=keep, seed=seed, progress=progress)
    ranking = result.ranking()
    typer.echo(f"seed {result.seed}; {len(ranking)} candidates ranked by CLVP score")
    typer.echo(f"{'rank':>4}  {'index':>5}  {'score':>8}  {'tokens':>6}")
    for position, (index, score, tokens) in enumerate(ranking, 1):
        typer.echo(f"{position:>4}  {index:>5}  {score:8.4f}  {tokens:>6}")
    timing = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.timings.items())
    typer.echo(f"timings: {timing}")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Model directory in any supported layout.")],
    destination: Annotated[Path, typer.Argument(help="Where to write the converted (native) directory.")],
    overwrite: Annotated[bool, typer.Option(help="Replace DESTINATION if it exists.")] = False,
) -> None:
    """Convert a model directory to the native safetensors format (loads faster, no pickle)."""
    from .weights.model_dir import convert as convert_dir

    with _clear_errors():
        written = convert_dir(source, destination, overwrite)
    typer.echo(f"wrote {written}")


@bench_app.command("rerank")
def bench_rerank(
    manifest: Annotated[Path, typer.Argument(help="JSONL manifest: one {text, voice, options} per line.")],
    out: Annotated[Path, typer.Option(help="Report folder (report.json, report.md, plots).")] = Path("rerank-report"),
    candidate_grid: Annotated[str, typer.Option("--candidates", help="Candidate counts, comma-separated.")] = "4,16",
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated.")] = "0,1",
    clvp_batch_size: Annotated[int, typer.Option(min=1, help="Candidates CLVP scores at once.")] = 16,
    asr: Annotated[bool, typer.Option("--asr", help="Also score by ear: every candidate to audio (the line's preset), "
                                      "transcribed by Whisper tiny.en; WER of CLVP's pick vs random vs best per N. "
                                      "Needs the eval extra.")] = False,
    models_dir: ModelsDir = None,
    device: Device = "cpu",
    quiet: Quiet = False,
) -> None:
    """Candidate-reranking run: sample and score candidates for every manifest line, write a report."""

    def numbers(text: str, name: str) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            _fail(f"{name} must be comma-separated integers, got {text!r}")
            raise

    with _clear_errors():
        grid, seed_list = numbers(candidate_grid, "--candidates"), numbers(seeds, "--seeds")
        transcriber = None
        if asr:  # before the models load: a missing eval extra is one message, at once
            from .eval.asr import Transcriber

            transcriber = Transcriber()
        with _Progress(quiet) as progress:
            from .bench.rerank_report import run_rerank_benchmark

            tts = _load(models_dir, device, progress=progress)
            out.mkdir(parents=True, exist_ok=True)
            report = run_rerank_benchmark(tts, manifest, out, candidates=grid, seeds=seed_list, progress=progress,
                                          clvp_batch_size=clvp_batch_size, transcriber=transcriber)
    typer.echo(report.markdown)
    typer.echo(f"wrote {report.json_path} and {report.markdown_path}")


# Training (tortoise_clvp/train): one command, the stage as its first argument ------------------------------------
from .train.recipe import ALL as _ALL_STAGES, STAGE_NAMES as _TRAIN_STAGES  # noqa: E402  (no torch: names only)


class _TrainBars:
    """One rich progress bar per thing a training stage reports, with its latest metrics (loss, hours, ...).

    Into a log file (not a terminal) it writes a plain line per thing instead, at most every LOG_EVERY_S seconds.
    """

    LOG_EVERY_S = 30.0

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"))
        self.tasks: dict[str, int] = {}
        self.logged: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        if not self.bar.console.is_terminal:
            now = time.monotonic()
            if done >= total or now - self.logged.get(what, -self.LOG_EVERY_S) >= self.LOG_EVERY_S:
                self.logged[what] = now
                self.bar.console.print(f"{time.strftime('%H:%M:%S')} {what} {done}/{total} {shown}", highlight=False)
            return
        if what not in self.tasks:
            self.tasks[what] = self.bar.add_task(what, total=total or None, metrics=shown)
        self.bar.update(self.tasks[what], completed=done, total=total or None, metrics=shown)


@app.command(help=f"Train our own small Tortoise, stage by stage. STAGE: {', '.join(_TRAIN_STAGES)} or {_ALL_STAGES} "
             "(in that order). Every stage resumes when run again.")
def train(
    stage: Annotated[str, typer.Argument(help=f"{', '.join(_TRAIN_STAGES)} or {_ALL_STAGES}.")],
    work_dir: Annotated[Path, typer.Argument(help="Work folder: every stage reads and writes here.")],
    smoke: Annotated[bool, typer.Option("--smoke", help="Toy scale: every stage in seconds, to prove the recipe.")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="Your own recordings instead of synthetic voices: a folder with metadata.csv (id|text) and wavs/.")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Fine-tune from this native model folder instead of training from scratch.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the whole recipe (default: the recipe's).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Training steps of this model stage (default: the recipe's); raise it to train a finished run on.")] = None,
    device: Annotated[str, typer.Option(help="Where the stage trains: cpu, cuda, cuda:1 (the autoregressive stage; the others train on the cpu).")] = "cpu",
) -> None:
    from .train.config import RecipeConfig
    from .train.recipe import get_stage, run_all, run_stage

    if stage != _ALL_STAGES and stage not in _TRAIN_STAGES:
        _fail(f"unknown stage {stage!r}; choose one of {', '.join(_TRAIN_STAGES)} or {_ALL_STAGES}")
    for option, folder in (("--data", data), ("--init", init)):
        if folder is not None and not folder.is_dir():
            _fail(f"{option} {folder} is not a folder")
    config = RecipeConfig.smoke() if smoke else RecipeConfig()
    config = replace(config, seed=config.seed if seed is None else seed, init_dir=init)
    if data is not None:
        config = replace(config, corpus=replace(config.corpus, data_dir=data.resolve()))
    if steps is not None:
        try:
            config = config.with_steps(stage, steps)
        except ValueError as error:
            _fail(f"--steps: {error}")
    try:
        config = config.with_device(stage, device)
    except ValueError as error:
        _fail(f"--device: {error}")

    def announce(step) -> None:
        bars.bar.console.print(f"[bold]{step.name}[/]: {step.summary}")

    with _clear_errors():
        bars = _TrainBars()
        with bars.bar:
            if stage == _ALL_STAGES:
                run_all(work_dir, config, bars, announce)
            else:
                announce(get_stage(stage))
                run_stage(stage, work_dir, config, bars)
    rejected = work_dir / "corpus" / "rejected.jsonl"
    if stage in ("corpus", _ALL_STAGES) and rejected.is_file() and rejected.stat().st_size:
        count = len(rejected.read_text(encoding="utf-8").splitlines())
        typer.secho(f"{count} item(s) of {data} were skipped; why, item by item: {rejected}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"done: {stage} in {work_dir}")


def _passive_openmp() -> None:
    """Many threads will run torch ops at once (server requests, batch items): OpenMP threads that spin while idle
    would steal the cores from them, so they sleep instead, unless OMP_WAIT_POLICY says otherwise. Before torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    models_dir: ModelsDir = None,
    device: Device = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 for the decoders.")] = "float32",
    workers: Annotated[int, typer.Option(min=1, help="Requests synthesized at once (their candidates share the decoder).")] = 8,
    max_queue: Annotated[int, typer.Option(min=0, help="Requests waiting beyond those; more get 429 with Retry-After.")] = 32,
    max_rows: Annotated[int, typer.Option(min=1, help="Candidate rows decoded together at most (memory).")] = 64,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds a request may take, waiting included.")] = 600.0,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Speech tokens per candidate at most (default: the preset's).")] = None,
    preset_name: Annotated[Optional[str], typer.Option("--preset", help="Preset for requests naming the model itself (default: the model's own; tts-1: ultra_fast_dpm, tts-1-hd: fast_dpm).")] = None,
    model_name: Annotated[Optional[str], typer.Option(help="The model's own name in requests (default: its folder's name).")] = None,
    voices_dir: VoicesDir = [],  # noqa: B006
    cache_dir: Annotated[Optional[Path], typer.Option(help="Voice latent cache (default ~/.cache/tortoise_clvp/latents).")] = None,
    torch_threads: Annotated[int, typer.Option(min=1, help="Torch threads of each thread the server computes in (raise it on many cores).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug.")] = "info",
) -> None:
    """Serve OpenAI's speech API, voice uploads, metrics and a web page over HTTP (needs the 'serve' extra)."""
    _passive_openmp()
    try:
        import uvicorn

        from .serve.app import create_app
        from .serve.settings import ServeSettings
    except ImportError as error:
        _fail(f"the server needs FastAPI and uvicorn ({error.name} is missing): pip install 'tortoise-clvp[serve]'")
    from .weights.discovery import resolve_models_dir

    _check_dtype(dtype)
    with _clear_errors():
        name = model_name or resolve_models_dir(models_dir).path.name
        settings = ServeSettings(
            model_name=name, default_preset=preset_name, workers=workers, max_queue=max_queue, timeout_s=timeout,
            max_rows=max_rows, max_tokens=max_tokens, voices_dirs=tuple(voices_dir), cache_dir=cache_dir,
            torch_threads=torch_threads,
        )
        application = create_app(_load(models_dir, device, dtype), settings)
    typer.echo(f"serving model {name!r} on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    try:
        uvicorn.run(application, host=host, port=port, log_level=log_level)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on; stopping this way is the normal end
        pass
    typer.echo("server stopped", err=True)


@app.command()
def batch(
    manifest: Annotated[Path, typer.Argument(help="JSONL: one {id, text, voice, [preset, seed, format]} per line.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: <id>.<format> files and results.jsonl.")],
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Run on Ray: a cluster address (from `ray start --head`), or 'local' to start one here. Without it: a pool of workers in this process.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Items at a time (local) or Ray actors, each loading the models once.")] = 2,
    retries: Annotated[int, typer.Option(min=0, help="Ray: extra attempts for an item whose worker died.")] = 2,
    models_dir: ModelsDir = None,
    device: Device = "cpu",
    voices_dir: VoicesDir = [],  # noqa: B006
    quiet: Quiet = False,
) -> None:
    """Speak every line of a manifest into --out; rerunning skips finished items (resumable)."""
    _passive_openmp()
    from .batch import LocalPool, RayPool, read_manifest, run_batch

    def show(event) -> None:
        if not quiet or event.kind == "failed":
            detail = f": {event.detail}" if event.detail else ""
            typer.echo(f"[{event.done}/{event.total}] {event.kind} {event.id}{detail}", err=True)

    with _clear_errors():
        read_manifest(manifest)  # an unreadable manifest stops the run before any model loads
        if ray_address is None:
            pool = LocalPool(_load(models_dir, device), workers, voices_dir)
        else:
            pool = RayPool(models_dir, ray_address, workers, device, retries=retries, voices_dirs=voices_dir)
        try:
            summary = run_batch(manifest, out, pool, show)
        finally:
            pool.close()
    typer.echo(f"{summary.written} written, {summary.skipped} already done, {summary.failed} failed; "
               f"results in {summary.results_path}")
    if summary.failed:
        raise typer.Exit(code=1)
