"""The one user-facing exception of the classification package."""


class ClassificationError(ValueError):
    """Bad input for classification: one sentence naming the file, row or value and what was
    expected. The command line prints it as is, without a traceback, and exits non-zero."""
