"""`python -m eval` runs the zero-shot evaluation CLI (eval.run)."""
import sys

from eval.run import main

sys.exit(main())
