"""A stand-in for Azure at the HTTP boundary: the official SDKs send real HTTP requests through
azure-core's ``RequestsTransport``; only the socket is replaced by a ``requests`` adapter that
records each request and answers like ARM (resource store with PUT/GET/PATCH/DELETE/list,
provisioningState Succeeded, ARM error bodies) plus per-test handlers for actions (POST ...).

Not a mock of our code: everything from our modules down to the SDK's serialized request runs
for real; the answers are shaped like the Azure REST reference (2024-04-01 and the api-versions
the SDKs actually use).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

TOKEN = "fake-aad-token-for-tests"


class StaticCredential:
    """A TokenCredential stand-in for AAD returning a static token."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        self.scopes.extend(scopes)
        return AccessTokenInfo(TOKEN, int(time.time()) + 3600)


@dataclass
class Call:
    method: str
    url: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes = b""

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


Handler = Callable[[Call], tuple[int, Any] | None]


@dataclass
class FakeAzure:
    calls: list[Call] = field(default_factory=list)
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    handlers: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- configuration -------------------------------------------------------------
    def on(self, method: str, path_regex: str, handler: Handler) -> None:
        """Answer ``method`` on paths matching ``path_regex`` (case-insensitive); newest first."""
        self.handlers.insert(0, (method.upper(), re.compile(path_regex, re.I), handler))

    def put_resource(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = self._stored(path, body)
        self.store[path.lower()] = stored
        return stored

    def transport(self) -> RequestsTransport:
        session = requests.Session()
        adapter = _Adapter(self)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return _NoSleepTransport(session=session, session_owner=False)

    # -- queries for assertions ----------------------------------------------------
    def find(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex, re.I)
        return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("PUT", "PATCH", "POST", "DELETE")]

    def all_text(self) -> str:
        return "\n".join(f"{c.method} {c.url} {c.raw.decode('utf-8', 'replace')}" for c in self.calls)

    # -- ARM semantics --------------------------------------------------------------
    def _stored(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body) if isinstance(body, dict) else {}
        stored["id"] = path
        stored["name"] = path.rstrip("/").split("/")[-1]
        props = stored.setdefault("properties", {})
        if isinstance(props, dict) and "/config/" not in path.lower():
            props.setdefault("provisioningState", "Succeeded")
            _server_defaults(path, stored, props)
        return stored

    def answer(self, call: Call) -> tuple[int, Any]:
        with self.lock:
            self.calls.append(call)
            for method, pattern, handler in self.handlers:
                if method == call.method and pattern.search(call.path):
                    result = handler(call)
                    if result is not None:
                        return result
            key = call.path.rstrip("/").lower()
            if call.method == "PUT":
                existed = key in self.store
                stored = self._stored(call.path.rstrip("/"), call.body or {})
                self.store[key] = stored
                web = "/providers/microsoft.web/" in key  # App Service answers 200 (or 202), never 201
                return (200 if existed or web else 201), stored
            if call.method == "PATCH":
                if key not in self.store and key.endswith("/config/web"):  # always exists in ARM
                    self.store[key] = self._stored(call.path.rstrip("/"), {})
                if key not in self.store:
                    return _not_found(call.path)
                _merge(self.store[key], call.body or {})
                return 200, self.store[key]
            if call.method == "GET":
                if key in self.store:
                    return 200, self.store[key]
                children = [v for k, v in sorted(self.store.items()) if k.rsplit("/", 1)[0] == key]
                if children:
                    return 200, {"value": children}
                if _is_collection(key):
                    return 200, {"value": []}
                return _not_found(call.path)
            if call.method == "POST" and key.endswith("/startpendingupload"):
                # Azure ML hands out a temporary blob location for code uploads
                asset = call.path.split("/")[-4]
                blob = f"https://fakestore.blob.core.windows.net/azureml-blobstore/LocalUpload/{asset}"
                return 200, {
                    "pendingUploadId": asset,
                    "pendingUploadType": "TemporaryBlobReference",
                    "blobReferenceForConsumption": {
                        "blobUri": blob,
                        "storageAccountArmId": "/subscriptions/x/resourceGroups/x/providers/Microsoft.Storage/storageAccounts/fakestore",
                        "credential": {"credentialType": "SAS", "sasUri": f"{blob}?sv=2021-08-06&sig=fake"},
                    },
                }
            if call.method == "POST" and key.endswith("/config/appsettings/list"):
                settings = self.store.get(key[: -len("/list")])
                return 200, settings or {"id": call.path[: -len("/list")], "properties": {}}
            if call.method == "DELETE":
                if self.store.pop(key, None) is None:
                    return 204, None
                return 200, None
            return _not_found(call.path)


def _server_defaults(path: str, stored: dict[str, Any], props: dict[str, Any]) -> None:
    """Read-only fields ARM fills in on its side (documented in the REST reference)."""
    parts = path.lower().rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "deployments" and "onlineendpoints" in parts:
        props.setdefault("scaleSettings", {"scaleType": "Default"})
        if props.get("endpointComputeType") == "Kubernetes":  # filled from the instance type
            props.setdefault(
                "containerResourceRequirements",
                {"containerResourceRequests": {"cpu": "1", "memory": "2Gi"}, "containerResourceLimits": {}},
            )
    elif len(parts) >= 2 and parts[-2] == "onlineendpoints":
        name = path.rstrip("/").split("/")[-1]
        props.setdefault("scoringUri", f"https://{name}.westeurope.inference.ml.azure.com/score")
        props.setdefault("traffic", {})
    if len(parts) >= 4 and parts[-2] == "versions" and parts[-4] == "models":
        props.setdefault("flavors", {})
    if "/microsoft.web/sites/" in path.lower() and len(parts) >= 2 and parts[-2] in ("sites", "slots"):
        app = path.split("/")[8]  # /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/<app>
        host = app if parts[-2] == "sites" else f"{app}-{parts[-1]}"
        props.setdefault("defaultHostName", f"{host}.azurewebsites.net")
        props.setdefault("state", "Running")
    if "identity" in stored and isinstance(stored["identity"], dict):
        stored["identity"].setdefault("principalId", "22222222-2222-2222-2222-222222222222")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


_COLLECTIONS = ("onlineendpoints", "deployments", "versions", "slots", "data", "models", "environments")


def _is_collection(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in _COLLECTIONS


def _not_found(path: str) -> tuple[int, Any]:
    return 404, {"error": {"code": "ResourceNotFound", "message": f"The resource '{path}' was not found."}}


class _NoSleepTransport(RequestsTransport):
    """LRO polls sleep briefly so the tests stay fast; timeouts are still wall-clock bounded."""

    def sleep(self, duration: float) -> None:
        time.sleep(min(duration, 0.05))


class _Adapter(BaseAdapter):
    def __init__(self, fake: FakeAzure) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = request.url or ""
        parts = urlsplit(url)
        raw = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        if hasattr(request.body, "read"):
            raw = request.body.read()  # type: ignore[union-attr]
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()} or raw
        call = Call(
            method=(request.method or "GET").upper(),
            url=url,
            host=parts.hostname or "",
            path=unquote(parts.path),
            query={k: v[0] for k, v in parse_qs(parts.query).items()},
            headers=dict(request.headers),
            body=body,
            raw=raw,
        )
        status, payload = self.fake.answer(call)
        response = requests.Response()
        response.status_code = status
        response.url = url
        response.request = request
        response.reason = "OK" if status < 400 else "Error"
        content = (
            b""
            if payload is None
            else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        )
        response._content = content
        response.headers = CaseInsensitiveDict(
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(content)),
                "x-ms-request-id": "fake",
            }
        )
        response.encoding = "utf-8"
        response.raw = _Raw(content)
        return response

    def close(self) -> None:
        pass


class _Raw:
    """What azure-core reads when it streams a response body."""

    def __init__(self, content: bytes) -> None:
        self._content = content
        self._done = False

    def stream(self, chunk_size: int, decode_content: bool = False) -> Any:
        if not self._done:
            self._done = True
            yield self._content

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        if self._done:
            return b""
        self._done = True
        return self._content

    def close(self) -> None:
        pass
