"""The benchmark's user error: one sentence for the command line, exit status 2."""

from nnunetv2_vismae.errors import UserError


class BenchmarkError(UserError):
    """Bad input (environment, dataset, flags, files); the message is one sentence."""
