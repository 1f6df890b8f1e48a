"""The two kinds of failure a command reports in one sentence instead of a traceback.

Each package's own error (``CheckpointError``, ``PlanningError``, ``WriteError``, ...) is a
``UserError``; ``flags.console_script`` prints either kind after the program's name and picks the
exit status. Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Input the user can fix (a flag, file, folder, environment variable or the data): ``str()``
    is one sentence naming the value and what was expected."""


class StepFailed(Exception):
    """A command that this one ran failed: ``str()`` names it and its log, which says why."""
