"""Batch synthesis on Ray: a local Ray instance (2 CPUs) started here runs a small manifest over two actors; killing
the workers mid-run loses no item (Ray runs their items again on the restarted actors); a rerun recomputes nothing."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tortoise_clvp.batch import RESULTS_NAME, RayPool, run_batch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[test]')")

ITEMS = [{"id": f"item{i}", "text": text, "voice": "piper_joe", "preset": "ultra_fast_dpm", "seed": i}
         for i, text in enumerate(["Hello there.", "How are you today?", "Fine, thanks.", "Good night!"])]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


class Watch:
    """Pool wrapper: remembers what it was asked to run."""

    def __init__(self, pool):
        self.pool, self.asked = pool, []

    def run(self, items):
        self.asked.extend(item.id for item in items)
        return self.pool.run(items)


def test_killed_workers_lose_no_item_and_a_rerun_recomputes_nothing(local_ray, tiny_model_dir, tmp_path):
    manifest, out = tmp_path / "manifest.jsonl", tmp_path / "out"
    manifest.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    pool = RayPool(tiny_model_dir, workers=2)
    pids, killed, events = pool.pids(), [], []

    def on_event(event):
        events.append(event)
        if event.kind == "done" and not killed:  # one actor is idle now, the other busy with an item: kill both
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)

    try:
        summary = run_batch(manifest, out, pool, on_event)
        assert (summary.written, summary.failed) == (4, 0), summary.failures
        assert set(pool.pids()).isdisjoint(killed)  # the actors restarted (and loaded the models again)
        records = [json.loads(line) for line in (out / RESULTS_NAME).read_text().splitlines()]
        assert [r["id"] for r in records] == [item["id"] for item in ITEMS]
        assert all((out / f"{r['id']}.wav").is_file() and r["seed"] == int(r["id"][-1]) for r in records)

        watch = Watch(pool)
        again = run_batch(manifest, out, watch)
        assert (again.written, again.skipped, again.failed) == (0, 4, 0) and watch.asked == []
    finally:
        pool.close()
