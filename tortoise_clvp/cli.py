"""`clvp-tts`: the command line. It parses, calls the API and owns all output; no tensor code lives here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Tortoise text-to-speech, fast and faithful.")

MODELS_ENV = "TORTOISE_MODELS_DIR"


def _models_dir(option: Optional[Path]) -> Path:
    if option is not None:
        return option
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    raise typer.BadParameter(
        f"no model directory given. Pass --models-dir DIR or set {MODELS_ENV}. The directory holds the released "
        "Tortoise files (autoregressive.pth, clvp2.pth, tokenizer.json, mel_norms.pth), a Hugging Face CLVP "
        "folder, or a converted one.",
        param_hint="--models-dir",
    )


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def candidates(
    text: Annotated[str, typer.Argument(help="What to say.")],
    voice: Annotated[list[Path], typer.Option("--voice", "-v", help="Reference clip(s) of the voice (wav/flac/ogg).")],
    models_dir: Annotated[Optional[Path], typer.Option("--models-dir", help=f"Model directory (default ${MODELS_ENV}).")] = None,
    num_candidates: Annotated[int, typer.Option("--candidates", "-n", min=1, help="Candidates to sample.")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Candidates decoded together.")] = 16,
    keep: Annotated[int, typer.Option("--keep", "-k", min=1, help="Best candidates to report latents for.")] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Speech tokens per candidate at most.")] = 500,
    seed: Annotated[Optional[int], typer.Option(help="Seed; the same seed gives the same candidates.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps ...")] = "cpu",
) -> None:
    """Sample speech-token candidates for TEXT in a voice and rank them with CLVP."""
    from .api import TextToSpeech
    from .errors import TortoiseClvpError
    from .generate import DecodingOptions

    try:
        options = DecodingOptions(num_candidates=num_candidates, batch_size=batch_size, max_new_tokens=max_tokens)
        tts = TextToSpeech.from_local(_models_dir(models_dir), device=device)
        result = tts.candidates(text, voice, options, k=keep, seed=seed)
    except TortoiseClvpError as error:
        _fail(error)
        return
    typer.echo(f"seed {result.seed}; {len(result.ranked.order)} candidates ranked by CLVP score")
    typer.echo(f"{'rank':>4}  {'index':>5}  {'score':>8}  {'tokens':>6}")
    for position, index in enumerate(result.ranked.order.tolist(), 1):
        typer.echo(f"{position:>4}  {index:>5}  {result.ranked.scores[index].item():8.4f}  {int(result.lengths[index]):>6}")
    timing = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.timings.items())
    typer.echo(f"timings: {timing}")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Model directory in any supported layout.")],
    destination: Annotated[Path, typer.Argument(help="Where to write the converted (native) directory.")],
    overwrite: Annotated[bool, typer.Option(help="Replace DESTINATION if it exists.")] = False,
) -> None:
    """Convert a model directory to the native safetensors format (loads faster, no pickle)."""
    from .errors import TortoiseClvpError
    from .weights.model_dir import convert as convert_dir

    try:
        written = convert_dir(source, destination, overwrite)
    except TortoiseClvpError as error:
        _fail(error)
        return
    typer.echo(f"wrote {written}")
