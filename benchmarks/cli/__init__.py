"""``bench``: the command line. ``parser`` (every command and option), ``commands`` (what each
does, one function per command), ``main`` (entry point and exit codes). The only part of
``recboard.benchmarks`` that imports ``recboard.leaderboard``."""
from recboard.benchmarks.cli.main import EXIT_FAILURE, EXIT_USAGE, main
from recboard.benchmarks.cli.parser import build_parser

__all__ = ["main", "build_parser", "EXIT_FAILURE", "EXIT_USAGE"]
