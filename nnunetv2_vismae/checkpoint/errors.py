"""The one exception type of the checkpoint package."""

from nnunetv2_vismae.errors import UserError


class CheckpointError(UserError):
    """A user-facing problem with an encoder checkpoint.

    The message is one sentence naming the file or value and what was expected; command-line
    tools print it as is, without a traceback.
    """
