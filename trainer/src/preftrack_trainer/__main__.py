"""Allow ``python -m preftrack_trainer``."""

import sys

from preftrack_trainer.cli import main

sys.exit(main())
