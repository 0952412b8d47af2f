"""`python -m pipeline` is the `intake` command."""

import sys

from pipeline.cli import main

sys.exit(main())
