"""The planning stage's user error."""

from nnunetv2_vismae.errors import UserError


class PlanningError(UserError):
    """A user error while planning; the message is one sentence for the command line."""
