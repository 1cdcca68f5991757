"""The documentation stays true: the generated sweep reference is current, and every `dfu ...`
command the docs show exists in the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.sweep.reference import sweep_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_sweep_reference_is_generated_from_the_current_models():
    assert (ROOT / "docs" / "sweep-reference.md").read_text() == sweep_reference(), (
        "run `dfu sweep schema --markdown > docs/sweep-reference.md`")


def _documented_commands() -> set[tuple[str, ...]]:
    commands = set()
    for doc in DOCS:
        for match in re.finditer(r"^\s*dfu ([a-z]+)(?: ([a-z]+))?", doc.read_text(), re.M):
            commands.add(tuple(w for w in match.groups() if w))
    return commands


@pytest.mark.parametrize("command", sorted(_documented_commands()))
def test_every_documented_command_exists(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    if result.exit_code != 0 and len(command) == 2:  # the second word was an argument
        result = CliRunner().invoke(app, [command[0], "--help"])
    assert result.exit_code == 0, result.output
