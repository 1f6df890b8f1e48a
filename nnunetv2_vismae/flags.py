"""Command-line flags shared by the commands: numeric ``type``s that refuse a value out of range while
argparse parses it (so ``--epochs 0`` is one sentence before anything is read or written, not a
ZeroDivisionError later), and a parser that reports a bad command line as one sentence.
"""
from __future__ import annotations

import argparse
import math
import re


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
    """An ArgumentParser (and its subcommands' parsers) that reports a bad command line as
    ``PROG: error: <one sentence>`` with exit code 2, without the usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {sentence(message)}\n")
