"""Allow ``python -m preftrack_dev``."""

import sys

from preftrack_dev.cli import main

sys.exit(main())
