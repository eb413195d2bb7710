"""Batch synthesis on the local pool: a manifest's good lines become audio files and records, bad lines and failing
items are recorded with their error while the rest go on, everything is written atomically, and a rerun skips what
is finished (and reruns a line whose request changed). Also the `clvp-tts batch` command."""

from __future__ import annotations

import json

import pytest
import soundfile
from typer.testing import CliRunner

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.batch import RESULTS_NAME, LocalPool, read_manifest, run_batch
from tortoise_clvp.cli import app
from tortoise_clvp.errors import TortoiseClvpError

GOOD = [
    {"id": "a", "text": "Hello there.", "voice": "piper_joe", "preset": "ultra_fast_dpm", "seed": 3},
    {"id": "b.2", "text": "How are you today?", "voice": "random", "preset": "ultra_fast_dpm", "format": "flac"},
    {"id": "c", "text": "Good night, and good luck!", "voice": "piper_joe&espeak_us_m3", "preset": "ultra_fast_dpm",
     "seed": 5, "format": "ogg"},
]
FAILING = {"id": "d", "text": "Fine, thanks.", "voice": "nobody_by_that_name", "preset": "ultra_fast_dpm"}
BAD_LINES = ['{"id": "e", "text": ', json.dumps({"id": "../escape", "text": "x", "voice": "piper_joe"}),
             json.dumps({"id": "a", "text": "twice", "voice": "piper_joe"}),
             json.dumps({"id": "f", "text": "x", "voice": "piper_joe", "speed": 2})]


@pytest.fixture(scope="module")
def pool(tiny_model_dir):
    pool = LocalPool(TextToSpeech.from_local(tiny_model_dir), workers=2)
    yield pool
    pool.close()


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _results(out):
    return [json.loads(line) for line in (out / RESULTS_NAME).read_text().splitlines()]


def test_manifest_lines_are_checked(tmp_path):
    items, bad = read_manifest(_write(tmp_path / "m.jsonl", [*GOOD, FAILING, *BAD_LINES]))
    assert [item.id for item in items] == ["a", "b.2", "c", "d"]
    assert [(b["id"], b["line"]) for b in bad] == [("line-5", 5), ("line-6", 6), ("line-7", 7), ("f", 8)]
    messages = [b["error"] for b in bad]
    assert "not JSON" in messages[0] and "must be 1-128 letters" in messages[1]
    assert "appears twice" in messages[2] and "unknown field(s) speed" in messages[3]
    with pytest.raises(TortoiseClvpError, match="not found"):
        read_manifest(tmp_path / "missing.jsonl")


def test_a_run_writes_everything_it_can_and_a_rerun_skips_it(pool, tmp_path):
    manifest, out = _write(tmp_path / "m.jsonl", [*GOOD, FAILING, *BAD_LINES]), tmp_path / "out"
    events = []
    summary = run_batch(manifest, out, pool, events.append)
    assert (summary.written, summary.skipped, summary.failed) == (3, 0, 5)
    assert not (tmp_path / "escape.json").exists() and not (out / "escape.json").exists()
    assert "unknown voice 'nobody_by_that_name'" in summary.failures["d"]

    records = _results(out)
    assert [r["id"] for r in records] == ["a", "b.2", "c", "d", "line-5", "line-6", "line-7", "f"]  # good, then bad
    by_id = {r["id"]: r for r in records}
    for line in GOOD:
        record, suffix = by_id[line["id"]], line.get("format", "wav")
        audio, rate = soundfile.read(record["path"])
        assert record["path"].endswith(f"{line['id']}.{suffix}") and rate == 24000
        assert record["duration"] == pytest.approx(len(audio) / rate, abs=0.01)
        assert record["seconds"] > 0 and len(record["scores"]) == 1 and "error" not in record
    assert by_id["a"]["seed"] == 3 and isinstance(by_id["b.2"]["seed"], int)
    assert "error" in by_id["d"] and "path" not in by_id["d"]
    assert not list(out.rglob("*.partial"))  # every write was atomic
    assert events[-1].done == events[-1].total == 8

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".wav", ".flac", ".ogg")}
    assert len(stamps) == 3
    again = run_batch(manifest, out, pool)
    assert (again.written, again.skipped, again.failed) == (0, 3, 5)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".wav", ".flac", ".ogg")} == stamps
    assert _results(out) == records

    changed = [{**GOOD[0], "text": "Something else entirely."}, *GOOD[1:]]
    third = run_batch(_write(tmp_path / "m2.jsonl", changed), out, pool)
    assert (third.written, third.skipped, third.failed) == (1, 2, 0)


def test_the_batch_command(tiny_model_dir, tmp_path):
    manifest, out = _write(tmp_path / "m.jsonl", [GOOD[0], FAILING]), tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(manifest), "--out", str(out), "--models-dir", str(tiny_model_dir),
                                      "--workers", "1"])
    assert result.exit_code == 1, result.output  # one item failed
    assert "1 written, 0 already done, 1 failed" in result.output
    assert "failed d: unknown voice" in result.output
    assert (out / "a.wav").is_file()
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert result.exit_code == 2 and "not found" in result.output
