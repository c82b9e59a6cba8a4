"""The README's two set-up commands stay in step with CI and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import COMMANDS, cli

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    blocks = _bash_blocks()
    test_command = next(b for b in blocks if "pytest" in b)
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command.strip() in ci_lines


def test_readme_demo_command_runs_spheroid_demo():
    demo = next(b for b in _bash_blocks() if "spheroid demo" in b)
    assert demo.startswith("python3.11 -m venv") and "torch==2.13.0" in demo


def test_every_command_loads_and_has_help():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output
