"""The two kinds of failure a command reports in one sentence instead of a traceback.

Each package's own error (``CheckpointError``, ``PlanningError``, ``WriteError``, ...) is a
``UserError``; ``flags.console_script`` prints either kind after the program's name and picks the
exit status. Any other exception is a bug and keeps its traceback.
"""

import json

_SHOWN_CHARS = 60


def shown(value) -> str:
    """A value read from a file, for a user error's sentence: ASCII JSON (control and non-ASCII
    characters escaped), at most 60 characters, so a crafted file can put neither escape sequences nor
    megabytes on a terminal."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


class UserError(Exception):
    """Input the user can fix (a flag, file, folder, environment variable or the data): ``str()``
    is one sentence naming the value and what was expected."""


class StepFailed(Exception):
    """A command that this one ran failed: ``str()`` names it and its log, which says why."""
