"""The README stays true: every ``ccxt-collector`` command it shows exists, with every flag it uses."""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import COMMANDS, main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
GROUPS = {"shards": {"plan"}}


def invocations() -> list[str]:
    found = []
    for line in README.splitlines():
        for match in re.finditer(r"ccxt-collector ([a-z][^`|#\n]*)", line):
            text = match.group(1).split(" && ")[0].split(" & ")[0].split(";")[0].strip()
            if text.split()[0] in COMMANDS:
                found.append(text)
    return sorted(set(found))


@lru_cache(maxsize=None)
def help_text(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("invocation", invocations())
def test_readme_invocation_matches_the_cli(invocation):
    try:
        words = shlex.split(invocation)
    except ValueError:  # a line cut inside quotes: check what precedes them
        words = invocation.split("'")[0].split()
    command = words[:2] if words[0] in GROUPS and len(words) > 1 and words[1] in GROUPS[words[0]] else words[:1]
    text = help_text(*command)
    for flag in (w.split("=")[0] for w in words if w.startswith("--")):
        assert flag in text, f"README uses `{flag}`, which `ccxt-collector {' '.join(command)}` does not have"


def test_readme_shows_every_command():
    shown = {inv.split()[0] for inv in invocations()}
    assert set(COMMANDS) - shown == set(), f"commands missing from the README: {set(COMMANDS) - shown}"
