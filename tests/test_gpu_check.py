"""scripts/gpu_check.sh runs only on a GPU machine; here: its syntax, and every command line it runs
is one that the command's own argparse parser accepts (ours, nnU-Net's and torchrun's), found by
reading the script, so a renamed or removed flag fails here rather than minutes into a GPU run."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
HEREDOC = re.compile(r"<<'(\w+)'\n.*?\n\1\n", re.S)
VARIABLE = re.compile(r"\$(\w+|\{\w+\})")
TORCHRUN = "torch.distributed.run"


def logical_lines(text: str) -> list[str]:
    """The script's lines with heredoc bodies left out and backslash continuations joined."""
    return HEREDOC.sub("\n", text).replace("\\\n", " ").splitlines()


def is_operator(token: str) -> bool:
    """Where a command's arguments end: a redirection (``>log``, ``2>&1``), a pipe, ``||``, ``&&``, ``;``."""
    return re.match(r"\d*[<>|&;]", token) is not None


def invocations(text: str) -> list[tuple[str, list[str]]]:
    """(command, arguments) of every console script and ``python -m`` module the script runs, shell
    variables replaced by a value every flag type takes ("1")."""
    consoles = {ep.name for ep in entry_points(group="console_scripts") if ep.name.startswith("nnUNetv2_")}
    found = []
    for line in logical_lines(text):
        tokens = shlex.split(line, comments=True)
        i = 0
        while i < len(tokens):
            module = tokens[i] == "-m" and i + 1 < len(tokens)
            name = tokens[i + 1] if module else tokens[i]
            i += 2 if module else 1
            if name not in consoles and name != TORCHRUN:
                continue
            args = []
            while i < len(tokens) and not is_operator(tokens[i]):
                args.append(VARIABLE.sub("1", tokens[i]))
                i += 1
            found.append((name, args))
    return found


class Parsed(BaseException):
    """Raised by the patched ``parse_args`` once the command line parsed: nothing after it runs."""


@pytest.fixture
def parse_only(monkeypatch):
    real = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)


def run_parser_of(name: str, args: list[str], monkeypatch):
    """The command's own entry point up to its parse (console scripts read sys.argv, ours also argv)."""
    if name == TORCHRUN:  # torchrun's flags, then the pretraining flags its script passes on
        from torch.distributed.run import get_args_parser

        parsed, unknown = argparse.ArgumentParser.parse_known_args(get_args_parser(), args)
        assert not unknown and parsed.training_script.endswith(".py")
        name, args = "nnUNetv2_vismae_pretrain", parsed.training_script_args
    (entry,) = entry_points(group="console_scripts", name=name)
    monkeypatch.setattr(sys, "argv", [name, *args])
    return entry.load()()


def test_the_script_is_valid_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here")
    result = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_it_runs_each_step_of_the_check():
    names = [name for name, _ in invocations(SCRIPT.read_text())]
    assert names == [
        "nnUNetv2_plan_and_preprocess",
        "nnUNetv2_vismae_pretrain",
        TORCHRUN,
        "nnUNetv2_vismae_speed",
        "nnUNetv2_vismae_plan",
        "nnUNetv2_train",
    ]


@pytest.mark.parametrize("name, args", invocations(SCRIPT.read_text()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_line_is_accepted_by_its_parser(name, args, parse_only, monkeypatch, capsys):
    with pytest.raises(Parsed):
        run_parser_of(name, args, monkeypatch)
    assert not capsys.readouterr().err  # a bad flag: our parsers print one sentence and return 2


def test_the_reader_would_see_a_flag_that_is_gone(parse_only, monkeypatch, capsys):
    argv = ["-i", "1", "-o", "1", "--no-such-flag", "1"]
    assert run_parser_of("nnUNetv2_vismae_pretrain", argv, monkeypatch) == 2  # refused before Parsed
    assert "--no-such-flag" in capsys.readouterr().err


def test_the_wheels_it_names_are_pinned():
    wheels = re.findall(r"^# WHEEL (\S+)$", SCRIPT.read_text(), re.M)
    assert "nnunetv2==2.8.1" in wheels and all(re.fullmatch(r"[\w.-]+==[\w.]+", w) for w in wheels)
