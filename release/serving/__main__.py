"""``python -m release.serving``: serve the image's flow with gunicorn (see :mod:`release.serving.server`)."""

import sys

from release.serving.server import main

sys.exit(main())
