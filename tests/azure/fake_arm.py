"""A stand-in for Azure at the HTTP boundary: the official SDKs send real HTTP requests through
azure-core's ``RequestsTransport``; only the socket is replaced by a ``requests`` adapter that
records each request and answers like ARM (resource store with PUT/GET/PATCH/DELETE/list,
ARM error bodies) plus per-test handlers for actions (POST ...). Like ARM, not an echo:

- long-running operations (Azure ML online endpoints and deployments, resource groups): PUT
  answers 201/200 with ``provisioningState`` Creating/Updating and an ``Azure-AsyncOperation``
  header; DELETE answers 202 with ``Location`` and ``Azure-AsyncOperation``; the operation is
  InProgress for :attr:`FakeAzure.lro_polls` polls, then Succeeded, or Failed with an ARM error
  body when a test planted it with :meth:`FakeAzure.fail_provisioning` (the resource then reads
  ``provisioningState: Failed``). Shapes follow azure-rest-api-specs
  ``.../stable/2024-04-01/examples/OnlineDeployment/ManagedOnlineDeployment/createOrUpdate.json``;
- Azure ML PUT bodies are checked against the SDK's generated models (tests/azure/oracle.py):
  a property the service does not know is a 400, as the service answers;
- a second role assignment with the same principal, role and scope under another name is a
  409 ``RoleAssignmentExists``;
- data-plane hosts (registry, vault, blob, scoring) answer 403 with the service's network-rule
  error when the :class:`Topology` says the caller's network is not allowed
  (:meth:`Topology.from_stack` reads it from a synthesized cdk.tf.json).

Extension point: :meth:`FakeAzure.on` registers a handler for a method and path pattern
(newest first; return None to fall through to the ARM semantics above).

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
import uuid
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
    status: int = 0  # the status code the fake answered
    response: Any = None  # the body it answered (a copy, as sent)

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


Handler = Callable[[Call], tuple[int, Any] | None]

ARM_HOST = "management.azure.com"


@dataclass
class Topology:
    """Which data-plane hosts refuse callers from outside their network, and where the caller is.

    ``private_hosts`` maps a host (``<acr>.azurecr.io``, ``<vault>.vault.azure.net``,
    ``<account>.blob.core.windows.net``, ``<endpoint>.<region>.inference.ml.azure.com``) to the
    service kind; ``caller_in_vnet=True`` models a self-hosted agent inside the VNet (private
    endpoints), which every host accepts."""

    private_hosts: dict[str, str] = field(default_factory=dict)
    caller_in_vnet: bool = False
    unresolvable: set[str] = field(default_factory=set)  # hosts whose DNS name does not resolve here

    @classmethod
    def from_stack(
        cls, doc: dict[str, Any], *, caller_in_vnet: bool = False, region: str = "westeurope"
    ) -> Topology:
        """Read public/private from a synthesized cdk.tf.json: ``public_network_access_enabled:
        false`` on azurerm registry/vault/storage, ``publicNetworkAccess: Disabled`` on azapi
        online endpoints."""
        resources = doc.get("resource", {})
        hosts: dict[str, str] = {}
        for rtype, kind, suffix in (
            ("azurerm_container_registry", "acr", ".azurecr.io"),
            ("azurerm_key_vault", "keyvault", ".vault.azure.net"),
            ("azurerm_storage_account", "blob", ".blob.core.windows.net"),
        ):
            for res in (resources.get(rtype) or {}).values():
                if res.get("public_network_access_enabled") is False:
                    hosts[f"{res['name']}{suffix}"] = kind
        for res in (resources.get("azapi_resource") or {}).values():
            props = (res.get("body") or {}).get("properties") or {}
            if res["type"].split("@")[0].lower().endswith("/onlineendpoints") and (
                props.get("publicNetworkAccess") == "Disabled"
            ):
                hosts[f"{res['name']}.{region}.inference.ml.azure.com"] = "endpoint"
        return cls(private_hosts=hosts, caller_in_vnet=caller_in_vnet)

    def refuses(self, host: str) -> str | None:
        """The service kind when ``host`` refuses this caller's network, else None."""
        return None if self.caller_in_vnet else self.private_hosts.get(host.lower())


def _network_denied(kind: str, host: str) -> tuple[int, Any, dict[str, str]]:
    """The answers each service gives a caller its network rules refuse (documented error codes)."""
    if kind == "blob":  # Storage: 403 AuthorizationFailure (XML)
        body = (
            b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationFailure</Code>'
            b"<Message>This request is not authorized to perform this operation.</Message></Error>"
        )
        return 403, body, {"x-ms-error-code": "AuthorizationFailure", "Content-Type": "application/xml"}
    if kind == "acr":  # ACR firewall: https://aka.ms/acr/firewall
        message = "client with IP '203.0.113.7' is not allowed access. Refer https://aka.ms/acr/firewall to grant access."
        return 403, {"errors": [{"code": "DENIED", "message": message}]}, {}
    if kind == "keyvault":
        return (
            403,
            {
                "error": {
                    "code": "Forbidden",
                    "message": "Public network access is disabled and request is not from a trusted service nor via an approved private link.",
                    "innererror": {"code": "ForbiddenByConnection"},
                }
            },
            {},
        )
    return (
        403,
        {
            "error": {
                "code": "Forbidden",
                "message": f"Public access to {host} is disabled (private endpoint only).",
            }
        },
        {},
    )


_RESOURCE_GROUP_RE = re.compile(r"^/subscriptions/[^/]+/resourcegroups/[^/]+$", re.I)
_ROLE_ASSIGNMENT_RE = re.compile(
    r"^(?P<scope>.*)/providers/microsoft\.authorization/roleassignments/(?P<name>[^/]+)$", re.I
)
_OPERATION_RE = re.compile(r"/operationStatuses/(?P<id>[^/]+)$", re.I)


def _is_lro_put(key: str) -> bool:
    """Azure ML online endpoints and deployments are long-running (x-ms-long-running-operation)."""
    parts = key.rstrip("/").split("/")
    if "microsoft.machinelearningservices" not in parts or len(parts) < 2:
        return False
    return parts[-2] == "onlineendpoints" or (parts[-2] == "deployments" and "onlineendpoints" in parts)


def _is_lro_delete(key: str) -> bool:
    """DELETE of those, and of a resource group (202 + Location in ARM)."""
    return _is_lro_put(key) or bool(_RESOURCE_GROUP_RE.match(key.rstrip("/")))


@dataclass
class _Operation:
    id: str
    key: str
    kind: str  # "put" | "delete"
    polls_left: int
    error: dict[str, Any] | None = None
    status: str = "InProgress"


@dataclass
class FakeAzure:
    calls: list[Call] = field(default_factory=list)
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # "<account host>/<container>/<blob>"
    handlers: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    topology: Topology = field(default_factory=Topology)
    lro_polls: int = 1  # operation-status polls answered InProgress before the operation ends
    validate_bodies: bool = True  # check Azure ML PUT bodies against the SDK models (oracle)
    operations: dict[str, _Operation] = field(default_factory=dict)
    failures: list[tuple[re.Pattern[str], dict[str, Any]]] = field(default_factory=list)

    # -- configuration -------------------------------------------------------------
    def on(self, method: str, path_regex: str, handler: Handler) -> None:
        """Answer ``method`` on paths matching ``path_regex`` (case-insensitive); newest first."""
        self.handlers.insert(0, (method.upper(), re.compile(path_regex, re.I), handler))

    def fail_provisioning(self, path_regex: str, code: str = "DeploymentFailed", message: str = "") -> None:
        """The next long-running PUT on a matching path ends Failed with this ARM error."""
        error = {"code": code, "message": message or f"{code}: the operation failed (planted by the test)"}
        self.failures.append((re.compile(path_regex, re.I), error))

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

    # -- ARM semantics: LRO, 409, validation ----------------------------------------
    def _arm_semantics(
        self, call: Call, key: str
    ) -> tuple[int, Any] | tuple[int, Any, dict[str, str]] | None:
        op = _OPERATION_RE.search(call.path)
        if call.method == "GET" and op:
            return self._poll(op.group("id"), call)
        ra = _ROLE_ASSIGNMENT_RE.match(call.path.rstrip("/"))
        if call.method == "PUT" and ra:
            return self._role_assignment(call, key, ra.group("scope"))
        if call.method == "GET" and key.endswith("/providers/microsoft.authorization/roleassignments"):
            return self._list_role_assignments(call, key)
        if (
            call.method == "PUT"
            and self.validate_bodies
            and "/providers/microsoft.machinelearningservices/" in key
        ):
            problem = self._validate(call)
            if problem:
                return 400, {"error": {"code": "UserError", "message": problem}}
        if call.method == "PUT" and _is_lro_put(key):
            return self._start_put(call, key)
        if call.method == "DELETE" and _is_lro_delete(key) and key in self.store:
            return self._start_delete(call, key)
        return None

    def _validate(self, call: Call) -> str | None:
        from tests.azure.oracle import UnknownResourceType, check

        rtype = _arm_type(call.path.rstrip("/"))
        body = {k: v for k, v in (call.body or {}).items() if k not in ("id", "name", "type", "systemData")}
        try:
            # the SDKs send extensible enums in their own case (e.g. "disabled"); the service accepts it
            problems = check(rtype, body, case_sensitive_enums=False)
        except UnknownResourceType:
            return None
        return "; ".join(str(p) for p in problems) or None

    def _start_put(self, call: Call, key: str) -> tuple[int, Any, dict[str, str]]:
        existed = key in self.store
        stored = self._stored(call.path.rstrip("/"), call.body or {})
        if existed:  # ARM keeps what the PUT does not replace until the operation succeeds
            stored["properties"].setdefault(
                "scoringUri", self.store[key].get("properties", {}).get("scoringUri")
            )
        stored["properties"]["provisioningState"] = "Updating" if existed else "Creating"
        self.store[key] = stored
        error = next((e for pattern, e in self.failures if pattern.search(call.path)), None)
        if error is not None:
            self.failures = [(p, e) for p, e in self.failures if e is not error]
        op = self._operation(key, "put", error)
        headers = {"Azure-AsyncOperation": _operation_url(call, op.id), "Retry-After": "1"}
        return (200 if existed else 201), _service_view(key, stored), headers

    def _start_delete(self, call: Call, key: str) -> tuple[int, Any, dict[str, str]]:
        self.store[key].setdefault("properties", {})["provisioningState"] = "Deleting"
        op = self._operation(key, "delete", None)
        url = _operation_url(call, op.id)
        return (
            202,
            None,
            {"Azure-AsyncOperation": url, "Location": url + "&kind=location", "Retry-After": "1"},
        )

    def _operation(self, key: str, kind: str, error: dict[str, Any] | None) -> _Operation:
        op = _Operation(id=str(uuid.uuid4()), key=key, kind=kind, polls_left=self.lro_polls, error=error)
        self.operations[op.id] = op
        return op

    def _poll(self, op_id: str, call: Call) -> tuple[int, Any, dict[str, str]] | tuple[int, Any]:
        op = self.operations.get(op_id)
        if op is None:
            return _not_found(call.path)
        if op.status == "InProgress":
            if op.polls_left > 0:
                op.polls_left -= 1
            else:
                self._finish(op)
        as_location = call.query.get("kind") == "location"
        if as_location:  # Location polling: 202 while running, then 200 (or the error)
            if op.status == "InProgress":
                return 202, None, {"Location": call.url, "Retry-After": "1"}
            return (200, None) if op.status == "Succeeded" else (400, {"error": op.error})
        body: dict[str, Any] = {"id": call.path, "name": op.id, "status": op.status}
        if op.status == "Failed":
            body["error"] = op.error
        headers = {"Retry-After": "1"} if op.status == "InProgress" else {}
        return 200, body, headers

    def _finish(self, op: _Operation) -> None:
        resource = self.store.get(op.key)
        if op.error is not None:
            op.status = "Failed"
            if resource is not None:
                resource.setdefault("properties", {})["provisioningState"] = "Failed"
            return
        op.status = "Succeeded"
        if op.kind == "delete":
            prefix = op.key + "/"
            for k in [k for k in self.store if k == op.key or k.startswith(prefix)]:
                del self.store[k]
        elif resource is not None:
            resource.setdefault("properties", {})["provisioningState"] = "Succeeded"

    def _role_assignment(self, call: Call, key: str, scope: str) -> tuple[int, Any]:
        props = (call.body or {}).get("properties") or {}
        for other_key, other in self.store.items():
            o = other.get("properties", {})
            if (
                other_key != key
                and "/providers/microsoft.authorization/roleassignments/" in other_key
                and o.get("principalId") == props.get("principalId")
                and str(o.get("roleDefinitionId", "")).lower()
                == str(props.get("roleDefinitionId", "")).lower()
                and str(o.get("scope", "")).lower() == scope.lower()
            ):
                return 409, {
                    "error": {
                        "code": "RoleAssignmentExists",
                        "message": "The role assignment already exists.",
                    }
                }
        stored = copy.deepcopy(call.body or {})
        stored.update(
            id=call.path,
            name=call.path.rstrip("/").split("/")[-1],
            type="Microsoft.Authorization/roleAssignments",
        )
        stored["properties"] = {
            **props,
            "scope": scope,
            "principalType": props.get("principalType", "ServicePrincipal"),
        }
        existed = key in self.store
        self.store[key] = stored
        return (200 if existed else 201), stored

    def _list_role_assignments(self, call: Call, key: str) -> tuple[int, Any]:
        """Assignments at, above or below the scope (ARM's list semantics), filtered by principal."""
        scope = key[: -len("/providers/microsoft.authorization/roleassignments")]
        wanted = re.search(r"(?:principalId eq|assignedTo\()\s*'([^']+)'", call.query.get("$filter", ""))
        out = []
        for k, v in sorted(self.store.items()):
            if "/providers/microsoft.authorization/roleassignments/" not in k:
                continue
            at = str(v["properties"].get("scope", "")).lower().rstrip("/")
            if not (scope.startswith(at) or at.startswith(scope) or at == "/"):
                continue
            if wanted and v["properties"].get("principalId") != wanted.group(1):
                continue
            out.append(v)
        return 200, {"value": out}

    # -- ARM semantics: the resource store -------------------------------------------
    def _stored(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body) if isinstance(body, dict) else {}
        stored["id"] = path
        stored["name"] = path.rstrip("/").split("/")[-1]
        stored.setdefault("type", _arm_type(path))
        stored.setdefault("systemData", dict(_SYSTEM_DATA))
        props = stored.setdefault("properties", {})
        if isinstance(props, dict) and "/config/" not in path.lower():
            props.setdefault("provisioningState", "Succeeded")
            _server_defaults(path, stored, props)
        return stored

    def answer(self, call: Call) -> tuple[int, Any]:
        with self.lock:
            self.calls.append(call)
            denied = self.topology.refuses(call.host)  # the network rule stands in front of the service
            if denied:
                return _network_denied(denied, call.host)
            for method, pattern, handler in self.handlers:
                if method == call.method and pattern.search(call.path):
                    result = handler(call)
                    if result is not None:
                        return result
            if call.host.endswith(".blob.core.windows.net"):
                return self._blob(call)
            key = call.path.rstrip("/").lower()
            special = self._arm_semantics(call, key)
            if special is not None:
                return special
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


def _operation_url(call: Call, op_id: str) -> str:
    sub = call.path.split("/")[2] if call.path.lower().startswith("/subscriptions/") else "x"
    version = call.api_version or "2024-04-01"
    return (
        f"https://{ARM_HOST}/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/"
        f"locations/westeurope/operationStatuses/{op_id}?api-version={version}"
    )


def _arm_type(path: str) -> str:
    """``Microsoft.X/a/b`` from ``/subscriptions/s/resourceGroups/r/providers/Microsoft.X/a/n/b/m``."""
    parts = path.strip("/").split("/")
    if "providers" not in parts:
        return "Microsoft.Resources/resourceGroups" if len(parts) == 4 else ""
    i = len(parts) - 1 - parts[::-1].index("providers")
    rest = parts[i + 1 :]
    return "/".join([rest[0], *rest[1::2]])


_SYSTEM_DATA = {
    "createdAt": "2026-11-30T06:00:00.000Z",
    "createdBy": "ci@example.org",
    "createdByType": "User",
    "lastModifiedAt": "2026-11-30T06:00:00.000Z",
    "lastModifiedBy": "ci@example.org",
    "lastModifiedByType": "User",
}


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
        stored["identity"].setdefault("tenantId", "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")


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
        if call.host.lower() in self.fake.topology.unresolvable:  # what urllib3 raises for a DNS failure
            raise requests.exceptions.ConnectionError(
                f"HTTPSConnectionPool(host='{call.host}', port=443): Max retries exceeded (Caused by "
                f"NameResolutionError(\"Failed to resolve '{call.host}' ([Errno -2] Name or service not known)\"))"
            )
        reply = self.fake.answer(call)
        status, payload = reply[0], reply[1]
        call.status = status
        call.response = copy.deepcopy(payload) if isinstance(payload, dict) else payload
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
