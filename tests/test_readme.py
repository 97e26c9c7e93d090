"""The README's code runs as written: every Python block, and the commands of its "Run it" block."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest

from smoothadv.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip()  # each block prints what it computed


def test_run_it_commands_work(tmp_path, monkeypatch, capsys):
    section = README[README.index("## Run it"):README.index("## Use it from Python")]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()
                if line.startswith(".venv/bin/smoothadv")]
    assert len(commands) >= 3
    monkeypatch.chdir(ROOT)
    for command in commands:
        words = [w.replace("out/", f"{tmp_path}/") for w in shlex.split(command)[1:]]
        args = [match for w in words for match in (sorted(glob.glob(w)) if "*" in w else [w])]
        assert main(args) == 0, command
    assert "fooled" in capsys.readouterr().out
