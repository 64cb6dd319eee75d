"""The production server that runs inside a flow image (``python -m release.serving``).

It serves ``POST /score`` and ``GET /health`` on ``$PORT`` (default 8080) with several
pre-forked worker processes; connections are resolved from environment variables at start-up.
"""
