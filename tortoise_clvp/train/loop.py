"""One training loop for a model stage: AdamW with warmup and cosine decay, periodic evaluation keeping the best
weights, optional EMA, early stopping, and checkpoints that let a rerun continue exactly where the last run stopped.

A stage supplies two functions: ``loss(step) -> (loss, terms)`` for the batch of that step (drawn from
`step_generator(seed, step)`, so a resumed run sees the same batches as an uninterrupted one), and
``evaluate(model) -> metrics`` whose "loss" entry picks the best weights. The stage folder then holds:

- ``checkpoint.pt``: everything needed to resume (weights, optimiser, EMA, best weights, history), written
  atomically every `checkpoint_every` steps and after every evaluation;
- ``<part>.safetensors`` + ``<part>.json``: the best weights so far and their config, what the export reads;
- ``metrics.json``: every evaluation, the wall time and throughput, for the model card and benchmarks.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..atomic import write_bytes_atomic
from ..errors import CheckpointError, OptionsError
from ..weights.model_dir import detect_layout, model_parts
from .config import LoopConfig, TrainProgress

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
SELECTION_METRIC = "loss"  # the entry of `evaluate`'s metrics that picks the best weights (lower is better)
EMA_WARMUP = 10  # the EMA's decay is min(ema_decay, (1 + step) / (EMA_WARMUP + step))
STEP_TIME_STEPS = 20  # the throughput shown and recorded is averaged over about this many recent steps

Loss = Callable[[int], "tuple[Tensor, dict[str, float]]"]
Evaluate = Callable[[nn.Module], "dict[str, float]"]


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for the batch of `step`: independent streams per (seed, step), the same on every run."""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def training_device(name: str) -> torch.device:
    """The torch device called `name`; OptionsError when torch does not know the name or this machine lacks it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionsError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise OptionsError(f"device {name!r} is not available here (CUDA devices: {torch.cuda.device_count()}); "
                           "train on the cpu or on a machine with that GPU")
    if device.type not in ("cpu", "cuda"):
        raise OptionsError(f"training runs on cpu or cuda devices, not {name!r}")
    return device


def learning_rate_at(loop: LoopConfig, step: int) -> float:
    """Linear warmup over warmup_steps, then a cosine from learning_rate down to final_lr_fraction of it."""
    if step < loop.warmup_steps:
        return loop.learning_rate * (step + 1) / loop.warmup_steps
    progress = (step - loop.warmup_steps) / max(loop.steps - loop.warmup_steps, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return loop.learning_rate * (loop.final_lr_fraction + (1.0 - loop.final_lr_fraction) * cosine)


def initial_model(
    model_class: type[nn.Module], config: Any, part: str, seed: int, init_dir: Optional[Path] = None
) -> nn.Module:
    """The model a stage starts from: `part` of the model folder `init_dir` (any layout) when it has one (fine-tuning
    keeps that model's sizes), else a new `model_class(config)` initialised from `seed` (the global RNG is left as
    it was)."""
    if init_dir is not None:
        parts = model_parts(Path(init_dir), detect_layout(Path(init_dir)))
        if part in parts:
            return parts[part].load().train().requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config)


def weights_file(folder: Path, part: str) -> Path:
    return folder / f"{part}.safetensors"


def config_file(folder: Path, part: str) -> Path:
    return folder / f"{part}.json"


def load_trained(folder: Path, part: str, model_class: type[nn.Module], config_class: Any) -> nn.Module:
    """The best weights a stage wrote into `folder`, as an eval-mode model; CheckpointError if it has not run."""
    weights, config = weights_file(folder, part), config_file(folder, part)
    if not (weights.is_file() and config.is_file()):
        raise CheckpointError(f"no trained {part} in {folder}: run `clvp-tts train {part} WORK_DIR` first")
    model = model_class(config_class.from_dict(json.loads(config.read_text(encoding="utf-8"))))
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


@dataclass
class _State:
    step: int = 0
    finished: bool = False
    best_loss: float = math.inf
    best_step: int = -1
    evals_since_best: int = 0
    seconds: float = 0.0  # wall time of the steps and evaluations of every run so far
    step_seconds: float = 0.0  # a running mean (over about STEP_TIME_STEPS steps) of one step's wall time
    history: list = field(default_factory=list)  # one entry per evaluation


class StageRun:
    """A model's training in `folder`, resumed from its checkpoint if there is one, on `device` (the model moves
    there; the best weights are saved as CPU float32, so a run resumes and exports on any device)."""

    def __init__(self, folder: Path, part: str, model: nn.Module, loop: LoopConfig, progress: TrainProgress,
                 device: str = "cpu") -> None:
        self.folder, self.part, self.model, self.loop, self.progress = Path(folder), part, model, loop, progress
        self.device = training_device(device)
        self.folder.mkdir(parents=True, exist_ok=True)
        model.to(self.device)
        self.optimizer = torch.optim.AdamW(  # fused: one kernel for all parameters, ~4x cheaper per step on CPU
            model.parameters(), lr=loop.learning_rate, betas=loop.betas, weight_decay=loop.weight_decay, fused=True
        )
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if loop.ema_decay > 0 else None
        self.state = _State()
        self._resume()

    @property
    def finished(self) -> bool:
        """Whether the run is over (all steps, or stopped early): `train` then only reports."""
        return self.state.finished

    @property
    def evaluated_model(self) -> nn.Module:
        """What is evaluated and exported: the EMA weights when on, else the trained ones."""
        return self.model if self.ema is None else self.ema

    # checkpoints ----------------------------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.folder / CHECKPOINT_FILE
        if not path.is_file():
            return
        try:
            saved = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # torch raises many types for damaged files
            raise CheckpointError(
                f"cannot read {path} ({error}); delete it to train {self.part} from scratch"
            ) from None
        if saved.get("config") != self.model.config.to_dict():
            raise CheckpointError(
                f"{path} holds a {self.part} of another size than this recipe's; delete {self.folder} to train it "
                "from scratch, or rerun with the settings it was trained with"
            )
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.state = _State(**saved["state"])
        stopped_early = self.loop.patience and self.state.evals_since_best >= self.loop.patience
        if self.state.finished and self.state.step < self.loop.steps and not stopped_early:
            self.state.finished = False  # the step budget was raised since the run ended: train on to the new one

    def _save_checkpoint(self) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "config": self.model.config.to_dict(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "state": vars(self.state),
            },
            buffer,
        )
        write_bytes_atomic(self.folder / CHECKPOINT_FILE, buffer.getvalue())

    def _save_best(self) -> None:
        weights = self.evaluated_model.state_dict()
        state = {name: value.detach().to("cpu", torch.float32).contiguous() for name, value in weights.items()}
        write_bytes_atomic(weights_file(self.folder, self.part), save(state))
        config = json.dumps(self.model.config.to_dict(), indent=1)
        write_bytes_atomic(config_file(self.folder, self.part), config.encode("utf-8"))

    def _write_metrics(self, throughput: dict[str, float]) -> None:
        """metrics.json: the run's progress, evaluations, wall time and recent `throughput`."""
        summary = {
            "part": self.part,
            "step": self.state.step,
            "steps": self.loop.steps,
            "finished": self.state.finished,
            "best_step": self.state.best_step,
            "best_loss": self.state.best_loss,
            "train_seconds": self.state.seconds,
            "throughput": throughput,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "history": self.state.history,
        }
        write_bytes_atomic(self.folder / METRICS_FILE, json.dumps(summary, indent=1).encode())

    # training -------------------------------------------------------------------------------------------------
    def _evaluate(self, evaluate: Evaluate) -> dict[str, float]:
        started = time.perf_counter()
        model = self.evaluated_model
        was_training = model.training
        model.eval()
        metrics = evaluate(model)
        model.train(was_training)
        state = self.state
        state.seconds += time.perf_counter() - started
        state.history.append({"step": state.step, "seconds": state.seconds, **metrics})
        if metrics[SELECTION_METRIC] < state.best_loss:
            state.best_loss, state.best_step, state.evals_since_best = metrics[SELECTION_METRIC], state.step, 0
            self._save_best()
        else:
            state.evals_since_best += 1
            if self.loop.patience and state.evals_since_best >= self.loop.patience:
                state.finished = True
        return metrics

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.loop.ema_decay, (1 + self.state.step) / (EMA_WARMUP + self.state.step))
        with torch.no_grad():
            for averaged, current in zip(self.ema.parameters(), self.model.parameters()):
                averaged.lerp_(current, 1.0 - decay)
            for averaged, current in zip(self.ema.buffers(), self.model.buffers()):
                averaged.copy_(current)

    def train(self, loss: Loss, evaluate: Evaluate, throughput_unit: str, per_step: float) -> None:
        """Train until `steps` (or early stopping), then make sure the best weights are written.

        `per_step`: how much of `throughput_unit` (e.g. audio seconds, items) one step trains on, for progress."""
        loop, state = self.loop, self.state
        last = state.history[-1] if state.history else {}
        shown = {f"valid_{name}": value for name, value in last.items() if name not in ("step", "seconds")}

        def throughput() -> dict[str, float]:
            return {throughput_unit: per_step / state.step_seconds if state.step_seconds else 0.0}

        self.model.train()
        while not state.finished and state.step < loop.steps:
            started = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate_at(loop, state.step)
            value, terms = loss(state.step)
            self.optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), loop.grad_clip)
            self.optimizer.step()
            self._update_ema()
            state.step += 1
            elapsed = time.perf_counter() - started
            state.seconds += elapsed
            weight = max(1.0 / STEP_TIME_STEPS, 1.0 / state.step) if state.step_seconds else 1.0
            state.step_seconds += weight * (elapsed - state.step_seconds)
            evaluated = state.step % loop.eval_every == 0 or state.step == loop.steps
            if evaluated:
                shown = {f"valid_{k}": v for k, v in self._evaluate(evaluate).items()}
            if state.step == loop.steps:
                state.finished = True
            if evaluated or state.finished or state.step % loop.checkpoint_every == 0:
                self._save_checkpoint()
                self._write_metrics(throughput())
            metrics = {"loss": value.item(), **terms, **throughput(), **shown}
            self.progress(self.part, state.step, loop.steps, metrics)
        if not weights_file(self.folder, self.part).is_file():  # finished before any evaluation (steps = 0)
            self._evaluate(evaluate)
            self._save_checkpoint()
        self._write_metrics(throughput())
        self.progress(self.part, state.step, loop.steps, shown)
