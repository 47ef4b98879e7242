"""``python -m maskd.server`` is the same as the ``maskd`` console script."""

import sys

from maskd.server.cli import main

sys.exit(main())
