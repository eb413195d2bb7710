"""The README's Python example runs as written, pointed at the tiny model directory."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def test_readme_python_example_runs(tiny_model_dir, capsys, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README must show a Python example"
    code = blocks[0].replace('from_local("models")', f"from_local({str(tiny_model_dir)!r})")
    code = code.replace("num_candidates=16", "num_candidates=2, batch_size=2, max_new_tokens=10")
    monkeypatch.chdir(REPO_ROOT)
    exec(compile(code, "README.md", "exec"), {})
    assert "torch.Size" in capsys.readouterr().out
