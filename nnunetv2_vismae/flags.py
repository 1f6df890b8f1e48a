"""The command line shared by the commands: numeric ``type``s that refuse a value out of range while
argparse parses it (so ``--epochs 0`` is one sentence before anything is read or written, not a
ZeroDivisionError later), a parser that reports a bad command line as one sentence, and the runner
of every console script's ``main``.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import sys

from nnunetv2_vismae.errors import StepFailed, UserError
from nnunetv2_vismae.io.atomic import WriteError

# exit statuses: 2 for a user error, as argparse has it for a bad flag; 128 + SIGINT as shells report Ctrl-C
USER_ERROR, STEP_FAILED, INTERRUPTED = 2, 1, 130


def _number(convert, kind: str, requirement: str, accept):
    """An argparse ``type``: the text converted by ``convert`` (else "must be ``kind``"), refused
    unless ``accept(value)`` (then "must be ``requirement``")."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


positive_int = _number(int, "an integer", "at least 1", lambda v: v >= 1)
non_negative_int = _number(int, "an integer", "0 or more", lambda v: v >= 0)
positive_float = _number(float, "a number", "a positive number", lambda v: math.isfinite(v) and v > 0)
non_negative_float = _number(float, "a number", "a number of 0 or more", lambda v: math.isfinite(v) and v >= 0)


def sentence(message: str) -> str:
    """argparse's error message as one sentence: ``argument --steps: must be at least 1, got 0``
    becomes ``--steps must be at least 1, got 0.``"""
    message = re.sub(r"^argument (\S+): (?=must )", r"\1 ", message)
    return message[0].upper() + message[1:] + ("" if message.endswith(".") else ".")


class OneSentenceParser(argparse.ArgumentParser):
    """An ArgumentParser (and its subcommands' parsers) that raises a bad command line as a
    UserError of one sentence, which ``console_script`` reports like any other: no usage dump."""

    def error(self, message):
        raise UserError(sentence(message))


def console_script(prog: str, resumes: bool = False):
    """Decorate ``main(argv=None) -> int | None`` into the main of the console script ``prog``,
    returning its exit status. A UserError (a bad flag included) prints ``PROG: error: <sentence>``
    on stderr and returns 2, a StepFailed the same and 1, Ctrl-C 130; any other exception is a
    bug and keeps its traceback. ``resumes``: the same command run again continues where this one
    stopped, which the sentences for a full disk and for Ctrl-C then say."""

    def decorate(main):
        @functools.wraps(main)
        def run(argv=None) -> int:
            try:
                return main(argv) or 0
            except WriteError as e:  # atomic writes: what was saved before is intact
                return _report(f"{prog}: error: {e.sentence(e.RERUN) if resumes else e}", USER_ERROR)
            except UserError as e:
                return _report(f"{prog}: error: {e}", USER_ERROR)
            except StepFailed as e:
                return _report(f"{prog}: error: {e}", STEP_FAILED)
            except KeyboardInterrupt:
                return _report(
                    f"{prog}: interrupted" + ("; run the same command again to resume." if resumes else "."),
                    INTERRUPTED,
                )

        return run

    return decorate


def _report(line: str, status: int) -> int:
    print(line, file=sys.stderr)
    return status
