"""The benchmark's user error: one sentence for the command line, exit status 2."""


class BenchmarkError(Exception):
    """Bad input (environment, dataset, flags, files); the message is one sentence."""
