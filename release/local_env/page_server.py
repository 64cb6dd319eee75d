"""A static page server for offline flows: ``GET /pages/<file>`` from every ``flows/*/pages/``.

Flows such as web_classification fetch web pages; offline they fetch these copies instead.
Run: ``python -m release.local_env.page_server --host 127.0.0.1 --port PORT [--flows-dir DIR] [--fd N]``
(``--fd``: serve on an inherited, already listening socket instead of binding host:port).
``GET /health`` answers ``{"status": "ok", "pages": N}``.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import re
import signal
import socket
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

from release.project import project_root

REPO_ROOT = project_root()
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def collect_pages(flows_dir: Path) -> dict[str, Path]:
    """file name -> path, over ``<flows_dir>/*/pages/*`` (the first flow in name order wins)."""
    pages: dict[str, Path] = {}
    for path in sorted(flows_dir.glob("*/pages/*")):
        if path.is_file() and _FILE_RE.match(path.name):
            pages.setdefault(path.name, path)
    return pages


class PageHandler(BaseHTTPRequestHandler):
    server_version = "genaiops-pages"
    sys_version = ""
    flows_dir: Path = REPO_ROOT / "flows"

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/health":
            self._send(
                200, json.dumps({"status": "ok", "pages": len(collect_pages(self.flows_dir))}).encode()
            )
            return
        name = path[len("/pages/") :] if path.startswith("/pages/") else ""
        page = collect_pages(self.flows_dir).get(name) if _FILE_RE.match(name) else None
        if page is None:
            self._send(404, json.dumps({"error": f"no page {path!r}; pages live in flows/*/pages/"}).encode())
            return
        kind = mimetypes.guess_type(page.name)[0] or "application/octet-stream"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        self._send(200, page.read_bytes(), kind)

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("pages: " + (format % args) + "\n")


def make_server(
    host: str, port: int, flows_dir: Path, sock: socket.socket | None = None
) -> ThreadingHTTPServer:
    """The page server on host:port, or on ``sock``: an already bound, listening socket."""
    handler = type("BoundPageHandler", (PageHandler,), {"flows_dir": flows_dir})
    server = ThreadingHTTPServer((host, port), handler, bind_and_activate=sock is None)
    if sock is not None:
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()[:2]
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flows-dir", type=Path, default=REPO_ROOT / "flows")
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    server = make_server(args.host, args.port, args.flows_dir.resolve(), sock)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"pages: serving {args.flows_dir}/*/pages on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
