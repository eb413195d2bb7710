"""Seeds: the one seed of a run, the range it may take, and the fixed seed that crops voice clips.

A run's seed drives its random streams (`TextToSpeech.generate`: token sampling from `seed`, the waveform stage
from `seed + 1`; long texts: chunk `i` from `seed + 2 * i`). Voice conditioning does not take the run's seed: clips
longer than 6 s are cropped at starts drawn from :data:`CROP_SEED`, so a voice gives the same latents whatever the
run's seed, in every entry point (API, CLI, long texts, reranking report) and from the latent cache.

No torch here: the command line checks seeds before it imports anything heavy.
"""

from __future__ import annotations

import random

from .errors import OptionsError

MAX_SEED = 2**62 - 1  # stages and chunks use seed + small offsets; torch takes seeds below 2**63
DRAWN_SEEDS = 2**31  # a seed that is not given is drawn from range(DRAWN_SEEDS) and reported back
CROP_SEED = 0  # seeds the random crop starts of voice clips longer than 6 s (see the module notes)


def check_seed(seed: int | None) -> None:
    """Raise OptionsError unless `seed` is None or an integer from 0 to MAX_SEED."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise OptionsError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")


def seed_or_draw(seed: int | None) -> int:
    """`seed` once checked, or a freshly drawn one when it is None."""
    check_seed(seed)
    return random.randrange(DRAWN_SEEDS) if seed is None else seed
