"""The shared training loop: its learning-rate schedule, early stopping, and resuming, including a run whose step
budget was raised after it finished (it trains on) and one that stopped early (it stays stopped)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pytest
import torch
from torch import nn

from tortoise_clvp.train.config import LoopConfig
from tortoise_clvp.errors import OptionsError
from tortoise_clvp.train.loop import METRICS_FILE, StageRun, learning_rate_at, step_generator, training_device


@dataclass(frozen=True)
class LineConfig:
    width: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class Line(nn.Module):
    def __init__(self, config: LineConfig = LineConfig()):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.width, 1)


def _fit(run: StageRun, evaluations: list[float] | None = None) -> list[int]:
    """Train `run` on a fixed regression; returns the steps it trained. `evaluations`: the held-out losses its
    evaluations report, in order (default: the real loss)."""
    target = torch.arange(4.0)
    seen = []

    def loss(step: int):
        seen.append(step)
        x = torch.randn(8, 4, generator=step_generator(0, step))
        return ((run.model.linear(x)[:, 0] - x @ target) ** 2).mean(), {}

    def evaluate(model):
        if evaluations is not None:
            return {"loss": evaluations.pop(0)}
        x = torch.randn(64, 4, generator=step_generator(1, 0))
        with torch.no_grad():
            return {"loss": float(((model.linear(x)[:, 0] - x @ target) ** 2).mean())}

    run.train(loss, evaluate, "items/s", 8)
    return seen


def _run(folder, steps: int, patience: int = 0) -> StageRun:
    loop = LoopConfig(steps=steps, learning_rate=0.05, warmup_steps=2, eval_every=5, checkpoint_every=5, patience=patience)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return StageRun(folder, "line", Line(), loop, lambda *args: None)


def test_the_schedule_warms_up_then_decays_to_its_floor():
    loop = LoopConfig(steps=100, learning_rate=1.0, warmup_steps=10, final_lr_fraction=0.1)
    assert learning_rate_at(loop, 0) == pytest.approx(0.1) and learning_rate_at(loop, 9) == pytest.approx(1.0)
    assert learning_rate_at(loop, 10) == pytest.approx(1.0) and learning_rate_at(loop, 100) == pytest.approx(0.1)
    rates = [learning_rate_at(loop, step) for step in range(10, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_a_raised_budget_trains_on_from_where_the_run_ended(tmp_path):
    assert _fit(_run(tmp_path / "a", 10)) == list(range(10))
    resumed = _run(tmp_path / "a", 20)
    assert not resumed.finished and _fit(resumed) == list(range(10, 20))
    metrics = json.loads((tmp_path / "a" / METRICS_FILE).read_text())
    assert metrics["step"] == 20 and metrics["finished"] and [e["step"] for e in metrics["history"]] == [5, 10, 15, 20]
    assert _fit(_run(tmp_path / "a", 20)) == []  # finished at its budget: nothing more


def test_an_early_stopped_run_stays_stopped(tmp_path):
    stopped = _run(tmp_path / "b", 40, patience=2)
    assert _fit(stopped, evaluations=[1.0, 2.0, 3.0]) == list(range(15))  # no gain twice after step 5: stop at 15
    again = _run(tmp_path / "b", 80, patience=2)
    assert again.finished and _fit(again) == [] and again.state.best_step == 5


@pytest.mark.parametrize("name, message", [
    ("gpu7", "unknown device 'gpu7'"),
    ("cuda:99", "not available here"),
    ("meta", "runs on cpu or cuda devices"),
])
def test_a_device_that_cannot_train_is_refused_clearly(tmp_path, name, message):
    with pytest.raises(OptionsError, match=message):
        training_device(name)
    with pytest.raises(OptionsError, match=message):
        StageRun(tmp_path / "c", "line", Line(), LoopConfig(steps=1, learning_rate=0.1), lambda *args: None, name)
    assert training_device("cpu") == torch.device("cpu")
