"""The one base class of errors that mean the command was asked for wrongly.

``bench`` exits 2 on any ``UsageError`` (unknown model, dataset or config key, a value out of
range, a bad option combination) and 1 on every other failure. It sits at the package root
because every layer raises one: ``datasets`` and ``models`` (unknown names) as well as
``benchmarks`` (config, seeds, sweeps, tuning); it imports nothing.
"""


class UsageError(ValueError):
    """Bad usage, reported in one line with exit code 2."""
