"""Small helpers shared by the benchmark scripts: timing, memory, system info, tables, atomic JSON, reference numbers.

Timing follows gpt-fast's `generate.py`: warm up first, synchronise the accelerator before reading the clock, and
report the median of several runs with every run listed. Nothing here imports the library under test.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import torch

from tortoise_clvp.atomic import write_bytes_atomic

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_ENV = "CLVP_REFERENCE_DIR"


# timing ------------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device | str) -> None:
    """Wait for queued accelerator work so the clock measures it (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], T], device: torch.device | str = "cpu") -> tuple[float, T]:
    """Run `fn` once between two synchronised `perf_counter` reads -> (seconds, result)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


@dataclass
class Runs:
    """Wall-clock seconds of repeated runs of one thing; `median_s` is the number to quote."""

    times_s: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.times_s.append(seconds)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "min_s": min(self.times_s), "times_s": list(self.times_s)}


def time_runs(
    fn: Callable[[], Any],
    repeats: int,
    device: torch.device | str = "cpu",
    warmup: Callable[[], Any] | None = None,
) -> Runs:
    """Median-of-runs timer: one warm-up call (`warmup` or `fn` itself), then `repeats` timed calls."""
    (warmup or fn)()
    synchronize(device)
    runs = Runs()
    for _ in range(repeats):
        runs.add(timed(fn, device)[0])
    return runs


# memory ------------------------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this whole process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS).

    Process-wide and monotone: it includes model builds and everything run before the call.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float | None:
    """Resident set size right now in MiB (Linux /proc/self/statm), None where that file does not exist."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cuda_peak_mb(device: torch.device | str) -> float | None:
    """Peak allocated accelerator memory in MiB since the last reset, None on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def load_average() -> float | None:
    """1-minute load average (other processes competing for the cores skew timings badly), None if unknown."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def load_span(system: Mapping[str, Any]) -> str:
    """'0.77 at start, 1.13 at end' from a result's system block ('?' where a load is unknown)."""
    start, end = (system.get(key) for key in ("loadavg_1m_at_start", "loadavg_1m_at_end"))
    return " at start, ".join("?" if value is None else f"{value:.2f}" for value in (start, end)) + " at end"


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0: write 5 to /proc/self/clear_refs); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float | None:
    """Peak resident memory since the last reset (VmHWM), MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# system info -------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else whatever `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """HEAD of the checkout the benchmark runs from (read-only), None outside git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def system_info(device: torch.device | str = "cpu", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions, thread counts and hardware names worth recording next to any timing."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    if extra:
        info.update(extra)
    return info


def result_header(
    benchmark: str,
    args: Any,
    method: str,
    skip_args: Sequence[str] = (),
    system_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields every results JSON starts with: name, status "running", start time, arguments (paths as text,
    `skip_args` left out), the method text on one line, and the system with the load average at the start."""
    return {
        "benchmark": benchmark,
        "status": "running",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip_args},
        "method": " ".join(method.split()),
        "system": system_info("cpu", {**(system_extra or {}), "loadavg_1m_at_start": load_average()}),
    }


# output ------------------------------------------------------------------------------------------------------------
def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    """A plain aligned text table (floats to `digits` places, None as '-'); first column left, the rest right."""
    cells = [[_cell(v, digits) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as indented JSON atomically (folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, (json.dumps(data, indent=1, default=str) + "\n").encode())


def finish(path: str | os.PathLike[str], result: dict[str, Any]) -> Path:
    """Mark a benchmark's result done, stamp the finish time, write it atomically and say where."""
    result["status"] = "done"
    result["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    path = write_json_atomic(path, result)
    print(f"\nwrote {path}")
    return path


# reference numbers -------------------------------------------------------------------------------------------------
def reference_dir() -> Path | None:
    """The shared reference fixtures: $CLVP_REFERENCE_DIR, else ../shared/reference beside the checkout."""
    candidates = [os.environ.get(REFERENCE_ENV), REPO_ROOT.parent / "shared" / "reference", Path("../shared/reference")]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def load_reference(name: str) -> dict[str, Any] | None:
    """A reference JSON file by name (e.g. 'timings_cpu2.json'), None if absent or unreadable."""
    folder = reference_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None
    return {"path": str((folder / name).resolve()), **data} if isinstance(data, dict) else None
