"""`python -m tunelab.cli ARGS`: the `tunelab` console script without the script."""

import sys

from tunelab.cli.app import main

sys.exit(main())
