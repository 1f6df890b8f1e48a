"""The one user-facing exception of the classification package."""

from nnunetv2_vismae.errors import UserError


class ClassificationError(UserError):
    """Bad input for classification: one sentence naming the file, row or value and what was
    expected. The command line prints it as is, without a traceback, and exits non-zero."""
