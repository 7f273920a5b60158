import sys

from recboard.benchmarks.cli.main import main

sys.exit(main())
