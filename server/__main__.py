"""``python -m server`` is the same as the ``maskd`` console script."""

import sys

from server.cli import main

sys.exit(main())
