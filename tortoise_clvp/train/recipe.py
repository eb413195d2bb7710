"""The training recipe: its stages in order, and running one of them or all.

Every stage is `run_<stage>(work_dir, config, progress)`, reads what the stages before it wrote into the work
folder, and resumes when run again (finished work is skipped, training continues from its checkpoint). Stage
modules are imported only when their stage runs, so listing the stages needs no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import TortoiseClvpError
from .config import RecipeConfig, TrainProgress


class StageUnavailableError(TortoiseClvpError):
    """The stage exists in the recipe but its code is not written yet."""


@dataclass(frozen=True)
class Stage:
    """One step of the recipe: its name, what it makes, and where its `run_<name>` function lives."""

    name: str
    summary: str
    module: str  # under tortoise_clvp.train
    planned_in: Optional[str] = None  # the later work that adds this stage; `all` skips it until it exists

    def load(self) -> Callable[[Path, RecipeConfig, TrainProgress], None]:
        """The stage's function, or StageUnavailableError saying why it cannot run yet."""
        qualified = f"{__package__}.{self.module}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as error:
            if error.name != qualified:
                raise
            if self.planned_in is not None:
                raise StageUnavailableError(
                    f"stage {self.name!r} belongs to {self.planned_in} and is not implemented yet"
                ) from None
            raise StageUnavailableError(
                f"stage {self.name!r} is not built yet ({qualified} does not exist in this version)"
            ) from None
        return getattr(module, f"run_{self.name}")

    @property
    def available(self) -> bool:
        """Whether the stage can run in this version."""
        try:
            self.load()
        except StageUnavailableError:
            return False
        return True


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
    on_stage: Callable[[Stage, Optional[str]], None] = lambda stage, skipped: None,
) -> list[str]:
    """Run every stage in order; returns the names of the stages skipped because they belong to later work.

    `on_stage(stage, None)` is called before a stage runs, `on_stage(stage, reason)` when it is skipped. A stage of
    this part that is missing is an error, not a skip.
    """
    skipped = []
    for stage in STAGES:
        try:
            function = stage.load()
        except StageUnavailableError as error:
            if stage.planned_in is None:
                raise
            on_stage(stage, str(error))
            skipped.append(stage.name)
            continue
        on_stage(stage, None)
        function(Path(work_dir), config, progress)
    return skipped
