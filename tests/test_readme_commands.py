"""Every `genba` command in README.md's bash blocks is one the CLI accepts as written: the
sub-command exists and every flag and value parses (README's story block is also *run*, by
test_readme_story.py; the others need real data, weights or a server). A renamed flag or a
placeholder such as `[--flag]` left in README fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from genba.cli import build_parser

README = Path(__file__).parents[1] / "README.md"


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            commands += [part.strip() for part in line.split("&&") if part.strip().startswith(".venv/bin/genba ")]
    return commands


def test_readme_shows_genba_commands():
    assert len(readme_commands()) > 20


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, capsys):
    argv = shlex.split(command, comments=True)[1:]
    argv = argv[:-1] if argv and argv[-1] == "&" else argv  # `genba serve ... &`
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"README command does not parse ({exit_.code}): {command}\n{capsys.readouterr().err}")
    assert callable(args.run)
