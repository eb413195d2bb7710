"""`python -m tortoise_clvp` runs the command line."""

from .cli import app

app()
