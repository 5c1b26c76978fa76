"""Every command and sub-command of ``dcasenet-hub`` shows a runnable example in its ``--help`` (README promise)."""

from __future__ import annotations

import argparse
import re

from dcasenet_hub.cli import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(((*path, name), sub.format_help()))
                out += _commands(sub, (*path, name))
    return out


def test_every_command_help_has_an_example() -> None:
    commands = _commands(build_parser())
    names = {" ".join(p) for p, _ in commands}
    assert {"data download", "data make-mini", "data prepare", "download", "push"} <= names
    missing = []
    for path, text in commands:
        cmd = "dcasenet-hub " + " ".join(path)
        # an "example(s):" section with at least one line that runs this very command
        if not re.search(r"^examples?:", text, re.I | re.M) or not re.search(
                rf"^\s+(\S+=\S+\s+)*{re.escape(cmd)}(\s|$)", text, re.M):
            missing.append(cmd)
    assert not missing, f"--help without an example of the command itself: {missing}"
