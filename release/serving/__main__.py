"""``python -m release.serving``: start the pre-fork server (see :mod:`release.serving.server`)."""

import sys

from release.serving.server import main

sys.exit(main())
