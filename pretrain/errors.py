"""The one exception type for user mistakes (bad flags, paths, data): the CLI prints it as one line."""

from nnunetv2_vismae.errors import UserError


class PretrainUserError(UserError):
    """A problem with the user's input, reported as one sentence with exit code 2."""
