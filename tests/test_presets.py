"""Presets: the release's values, the tuned ultra_fast_ddim, and what faithful mode changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline.decoding import FAITHFUL_DECODING
from tortoise_clvp.pipeline.sampling import SamplingOptions
from tortoise_clvp.presets import PRESETS, preset

RELEASED = ("ultra_fast", "fast", "standard", "high_quality", "ultra_fast_dpm", "fast_dpm")


def test_the_release_presets_sample_as_the_original():
    for name in RELEASED:
        assert PRESETS[name].decoding.sampling == SamplingOptions(), name


def test_ultra_fast_ddim_is_the_setting_chosen_by_ear():
    options = preset("ultra_fast_ddim")
    assert (options.decoding.num_candidates, options.decoding.sampling.temperature) == (4, 0.5)
    assert options.decoding.sampling.repetition_penalty == 1.0
    assert (options.diffusion.sampler, options.diffusion.steps, options.diffusion.cond_free) == ("ddim", 4, False)


@pytest.mark.parametrize("name", list(PRESETS))
def test_faithful_mode_restores_the_accidents_and_keeps_the_presets_own_sampling(name):
    options, faithful = preset(name), preset(name, faithful=True)
    assert faithful.decoding.sampling == replace(options.decoding.sampling, top_k=50, penalize_prompt_ids=True)
    assert faithful.decoding.drop_remainder and faithful.diffusion == options.diffusion
    if name in RELEASED:  # for the release's presets: exactly the original's decoding
        expected = replace(FAITHFUL_DECODING, num_candidates=options.decoding.num_candidates,
                           batch_size=options.decoding.batch_size)
        assert faithful.decoding == expected


def test_an_unknown_preset_is_named_with_the_choices():
    with pytest.raises(OptionsError, match="unknown preset 'turbo'; choose one of ultra_fast, fast"):
        preset("turbo")
