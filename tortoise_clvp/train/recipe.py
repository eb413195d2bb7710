"""The training recipe: its stages in order, and running one of them or all.

Every stage is `run_<stage>(work_dir, config, progress)`, reads what the stages before it wrote into the work
folder, and resumes when run again (finished work is skipped, training continues from its checkpoint). Stage
modules are imported only when their stage runs, so listing the stages needs no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import RecipeConfig, TrainProgress


@dataclass(frozen=True)
class Stage:
    """One step of the recipe: its name, what it makes, and where its `run_<name>` function lives."""

    name: str
    summary: str
    module: str  # under tortoise_clvp.train

    def load(self) -> Callable[[Path, RecipeConfig, TrainProgress], None]:
        """The stage's function (its module is imported now: listing the stages needs no torch)."""
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), f"run_{self.name}")


STAGES = (
    Stage("corpus", "sentences spoken by synthetic voices (or your recordings) at 22.05 and 24 kHz", "corpus"),
    Stage("tokenizer", "the text BPE and the conditioning mel norms", "tokenizer"),
    Stage("codes", "the discrete VAE and every utterance's speech codes", "codes"),
    Stage("autoregressive", "the decoder that samples speech codes", "autoregressive"),
    Stage("clvp", "the contrastive text/speech model that ranks candidates", "clvp"),
    Stage("diffusion", "the diffusion decoder (decoder latents to mel)", "diffusion"),
    Stage("vocoder", "the vocoder (mel to 24 kHz audio)", "vocoder"),
    Stage("export", "the native model folder in WORK_DIR/export", "export"),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
ALL = "all"


def get_stage(name: str) -> Stage:
    """The stage called `name`; ValueError listing the stages otherwise."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown training stage {name!r}; choose one of {', '.join(STAGE_NAMES)} or {ALL}")


def run_stage(name: str, work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Run one stage (resuming if it ran before)."""
    get_stage(name).load()(Path(work_dir), config, progress)


def run_all(
    work_dir: Path,
    config: RecipeConfig,
    progress: TrainProgress,
    on_stage: Callable[[Stage], None] = lambda stage: None,
) -> None:
    """Run every stage in order (each resumes or skips what is done); `on_stage(stage)` is called before each."""
    for stage in STAGES:
        on_stage(stage)
        stage.load()(Path(work_dir), config, progress)
