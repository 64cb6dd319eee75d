"""A stand-in for the deployments' scoring hosts, and Log Analytics answers from what it served.

Azure is unreachable here, so the scoring requests of smoke tests and probes go to this local
server (127.0.0.1, stopped by the fixture). It counts the requests each deployment served,
telling the deployment by Azure ML's ``azureml-model-deployment`` header or by the first path
segment (``/<deployment>/score``, used for App Service slots). :func:`logs_from_served` then
answers the Log Analytics query API with those counts in the REST shape
(``tables[0].columns/rows``), so a canary check sees exactly the traffic that was sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.azure.conftest import RG, SUB
from tests.azure.fake_arm import Call, FakeAzure

LA_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OperationalInsights/workspaces/gaops-dev-log"
CUSTOMER = "5b1e0c7a-2d3f-4e5a-9b8c-7d6e5f4a3b2c"
QUERY_PATH = f"/v1/workspaces/{CUSTOMER}/query"
COLUMNS = [
    {"name": "deployment", "type": "string"},
    {"name": "requests", "type": "long"},
    {"name": "errors", "type": "long"},
    {"name": "p99_ms", "type": "real"},
]


@dataclass
class Scoring:
    base: str
    served: Counter[str] = field(default_factory=Counter)
    log: list[tuple[float, str]] = field(default_factory=list)  # (UNIX time, deployment)

    def since(self, when: float) -> Counter[str]:
        return Counter(who for at, who in self.log if at >= when)

    def url(self, deployment: str | None) -> str:
        return f"{self.base}/{deployment or 'endpoint'}/score"


@contextmanager
def scoring_standin() -> Iterator[Scoring]:
    scoring = Scoring("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self._answer({"status": "Healthy"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            who = self.headers.get("azureml-model-deployment") or self.path.strip("/").split("/")[0]
            with lock:
                scoring.served[who] += 1
                scoring.log.append((time.time(), who))
            self._answer({"category": "billing"})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scoring.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield scoring
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def logs_from_served(fake: FakeAzure, scoring: Scoring) -> None:
    """The Log Analytics workspace and its query API, answering with the served counts of the
    deployments the query names (Application Insights' ``AppRoleName`` = deployment)."""
    fake.put_resource(LA_PATH, {"location": "westeurope", "properties": {"customerId": CUSTOMER}})

    def query(call: Call) -> tuple[int, Any]:
        text = str(call.body.get("query", ""))
        match = re.search(r"TimeGenerated >= datetime\(([^)]+)\)", text)
        since = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp() if match else 0.0
        served = scoring.since(since)
        rows = [[name, count, 0, 12.0] for name, count in served.items() if f'"{name}"' in text]
        return 200, {"tables": [{"name": "PrimaryResult", "columns": COLUMNS, "rows": rows}]}

    fake.on("POST", f"^{QUERY_PATH}$", query)
