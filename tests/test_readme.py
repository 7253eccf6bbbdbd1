"""The README's promises, run as written: the tour's commands in order, each file they name."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT, need_data

README = (ROOT / "README.md").read_text()


def tour_commands() -> list[str]:
    block = README.split("## A short tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines() if line.split("#", 1)[0].strip()]


def test_the_tour_runs_as_written(tmp_path):
    """Every command of the tour, in order, in a fresh folder with the catalog in specs/."""
    data = need_data()
    (tmp_path / "specs").symlink_to(ROOT / "specs", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_OUT", "ZOO_SPECS", "ZOO_DEBUG")}
    commands = tour_commands()
    assert any(c.startswith("zoo predict") for c in commands)
    for command in commands:
        if command.startswith("export ZOO_DATA_DIR="):
            env["ZOO_DATA_DIR"] = str(data)  # the tour's own choice between ~/.keras/datasets and ../shared
            continue
        assert command.startswith("zoo "), command
        args = command.split()[1:]
        for arg in args:  # every file the tour names exists by the time the command runs
            if re.search(r"\.(json|onnx|pb|png|npy|csv)$", arg):
                assert (tmp_path / arg).is_file(), f"{command}: {arg} does not exist"
        done = subprocess.run([sys.executable, "-m", "zoo", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    assert (tmp_path / "exports" / "fashion-mnist-mlp" / "verify.json").is_file()


def test_every_exit_code_is_documented():
    from zoo.core.errors import EXIT_CODES

    table = README.split("## Failure modes", 1)[1]
    for code in EXIT_CODES:
        assert re.search(rf"^\| {code} \|", table, re.M), f"exit {code} is missing from the README's table"
