"""`python -m lab.laws SWEEP... --out FILE`: fit and write a law file (see lab/laws/__init__.py)."""

import sys

from lab.laws import main

sys.exit(main())
