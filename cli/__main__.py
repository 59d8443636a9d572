"""`python -m cli COMMAND ...`: the same as the `moe-ts` console script."""
import sys

from cli.main import main

sys.exit(main())
