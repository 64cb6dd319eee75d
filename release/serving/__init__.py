"""The production server that runs inside a flow image (``python -m release.serving``).

gunicorn serves ``POST /score``, ``GET /health``, ``GET /version`` and ``GET /swagger.json`` (prompt
flow's serving routes) on ``$PORT`` (default 8080) with several worker processes; connections are
resolved from environment variables at start-up.
"""
