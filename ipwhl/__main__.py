"""`python -m ipwhl`."""

import sys

from .cli import main

sys.exit(main())
