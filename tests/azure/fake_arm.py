"""A stand-in for Azure at the HTTP boundary: the official SDKs send real HTTP requests through
azure-core's ``RequestsTransport``; only the socket is replaced by a ``requests`` adapter that
records each request and answers like ARM (resource store with PUT/GET/PATCH/DELETE/list,
provisioningState Succeeded, ARM error bodies) plus per-test handlers for actions (POST ...).

Not a mock of our code: everything from our modules down to the SDK's serialized request runs
for real; the answers are shaped like the Azure REST reference (2024-04-01 and the api-versions
the SDKs actually use).
"""

from __future__ import annotations

import base64
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


def _jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT (the SDKs read claims such as ``aud`` and ``oid``; nothing verifies it here)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


# a static stand-in for an AAD access token (azure-ai-ml reads its audience before submitting jobs)
TOKEN = _jwt(
    {
        "aud": "https://ml.azure.com",
        "oid": "33333333-3333-3333-3333-333333333333",
        "tid": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "exp": 4102444800,
        "upn": "ci@example.org",
    }
)


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
    blobs: dict[str, bytes] = field(default_factory=dict)  # "<account host>/<container>/<blob>"
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

    # -- Blob storage semantics (block blobs put whole, read whole) ---------------------
    def _blob(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        key = f"{call.host}{call.path}"
        if call.method == "PUT" and "comp" in call.query:  # metadata, properties, tags: 200
            return (200, None, dict(_BLOB_HEADERS)) if key in self.blobs else (404, None, dict(_BLOB_HEADERS))
        if call.method == "PUT":
            self.blobs[key] = call.raw
            return 201, None, dict(_BLOB_HEADERS)
        if call.method in ("GET", "HEAD") and key in self.blobs:
            data = self.blobs[key]
            size = len(data)
            headers = {
                **_BLOB_HEADERS,
                "Content-Type": "application/octet-stream",
                "x-ms-blob-type": "BlockBlob",
                "Content-Range": f"bytes 0-{max(size - 1, 0)}/{size}",
            }
            return 206, data, headers
        if call.method == "HEAD":  # no body on HEAD: the error code travels in the header only
            return 404, None, {**_BLOB_HEADERS, "x-ms-error-code": "BlobNotFound"}
        not_found = b'<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code></Error>'
        return (
            404,
            not_found,
            {**_BLOB_HEADERS, "x-ms-error-code": "BlobNotFound", "Content-Type": "application/xml"},
        )

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
            if call.host.endswith(".blob.core.windows.net"):
                return self._blob(call)
            key = call.path.rstrip("/").lower()
            if call.method == "GET" and call.host.endswith(".api.azureml.ms") and key == "/discovery":
                base = f"https://{call.host}"
                return 200, {
                    k: base
                    for k in (
                        "api",
                        "catalog",
                        "experimentation",
                        "history",
                        "modelmanagement",
                        "pipelines",
                        "studiofrontend",
                    )
                }
            if call.method == "PUT":
                existed = key in self.store
                stored = self._stored(call.path.rstrip("/"), call.body or {})
                self.store[key] = stored
                stored = _service_view(key, stored)
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


_BLOB_HEADERS = {
    "ETag": '"0x8DC0000000000001"',
    "Last-Modified": "Tue, 24 Nov 2026 03:00:00 GMT",
    "x-ms-version": "2025-01-05",
}


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


def _service_view(path: str, stored: dict[str, Any]) -> dict[str, Any]:
    """Azure ML stores a prompt flow component as the parallel component that runs it."""
    spec = stored.get("properties", {}).get("componentSpec")
    if isinstance(spec, dict) and spec.get("type") == "promptflow_parallel":
        view = copy.deepcopy(stored)
        vspec = view["properties"]["componentSpec"]
        vspec["type"] = "parallel"
        vspec.pop("flow_definition_uri", None)
        vspec.pop("code", None)
        vspec["task"] = {
            "type": "run_function",
            "code": f"azureml:{spec.get('code')}",
            "entry_script": "driver/amlbi_main.py",
            "program_arguments": "--amlbi_pf_enabled True",
            "environment": "azureml://registries/azureml/environments/promptflow-runtime/versions/1",
        }
        return view
    return stored


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
        reply = self.fake.answer(call)
        status, payload = reply[0], reply[1]
        extra: dict[str, str] = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
        response = requests.Response()
        response.status_code = status
        response.url = url
        response.request = request
        response.reason = "OK" if status < 400 else "The specified resource does not exist."
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
                **extra,
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
