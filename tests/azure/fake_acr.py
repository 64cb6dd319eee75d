"""ACR's import API on the fake ARM (:class:`tests.azure.fake_arm.FakeAzure`), as the service does it.

``POST .../registries/{name}/importImage`` (https://learn.microsoft.com/rest/api/containerregistry/
registries/import-image) is a long-running operation:

* a bad request body is answered at once: 400 ``InvalidParameters`` (no source, neither
  ``resourceId`` nor ``registryUri``, ``targetTags`` not ``repo:tag``), an unknown target
  registry 404 ``ResourceNotFound``;
* otherwise 202 Accepted with ``Azure-AsyncOperation`` and ``Location`` (and ``Retry-After``);
  the operation URL answers ``{"status": "InProgress"}`` for ``polls_before_done`` polls, then
  ``Succeeded`` (the image is now in the target registry under each target tag, same digest),
  or ``Failed`` with an ARM error body when the source registry or image does not exist;
  the ``Location`` URL answers 202 while running and 200 when done.

Registries and their images are a small catalog here (``add_registry``, ``add_image``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from tests.azure.fake_arm import Call, FakeAzure

IMPORT_PATH = r"/providers/Microsoft\.ContainerRegistry/registries/([^/]+)/importImage$"
OPERATION_PATH = r"/providers/Microsoft\.ContainerRegistry/locations/([^/]+)/operationResults/([^/]+)$"
TAG_RE = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*:[\w][\w.-]{0,127}$")


@dataclass
class _Operation:
    status: str
    polls_left: int
    target: str
    tags: list[str]
    digest: str
    error: dict[str, str] | None = None


@dataclass
class FakeAcr:
    fake: FakeAzure
    location: str = "westeurope"
    polls_before_done: int = 2
    # resource id (lower case) -> {"repo@sha256:...": True, "repo:tag": "sha256:..."}
    registries: dict[str, dict[str, str]] = field(default_factory=dict)
    operations: dict[str, _Operation] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def install(self) -> FakeAcr:
        self.fake.on("POST", IMPORT_PATH, self._import)
        self.fake.on("GET", OPERATION_PATH, self._operation)
        return self

    def add_registry(self, resource_id: str) -> None:
        self.registries.setdefault(resource_id.lower(), {})

    def add_image(self, resource_id: str, repository: str, digest: str) -> None:
        self.registries.setdefault(resource_id.lower(), {})[f"{repository}@{digest}"] = digest

    def tag_of(self, resource_id: str, tag: str) -> str | None:
        return self.registries.get(resource_id.lower(), {}).get(tag)

    # -- handlers ------------------------------------------------------------------
    def _import(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        target = call.path.rsplit("/importImage", 1)[0].lower()
        if target not in self.registries:
            return (
                404,
                _error("ResourceNotFound", f"The Resource '{call.path.rsplit('/', 1)[0]}' was not found."),
                {},
            )
        body = call.body if isinstance(call.body, dict) else {}
        source = body.get("source") or {}
        tags = body.get("targetTags") or []
        problem = None
        if not source.get("sourceImage"):
            problem = "source.sourceImage is required"
        elif not (source.get("resourceId") or source.get("registryUri")):
            problem = "source.resourceId or source.registryUri is required"
        elif not tags and not body.get("untaggedTargetRepositories"):
            problem = "targetTags or untaggedTargetRepositories is required"
        elif any(not TAG_RE.match(t) for t in tags):
            problem = f"targetTags must be repository:tag, got {tags}"
        elif body.get("mode", "NoForce") not in ("NoForce", "Force"):
            problem = f"mode must be NoForce or Force, got {body.get('mode')!r}"
        if problem:
            return 400, _error("InvalidParameters", problem), {}
        name = f"registries-{next(self._ids):08d}"
        op = _Operation("InProgress", self.polls_before_done, target, list(tags), "")
        images = self.registries.get(str(source.get("resourceId", "")).lower())
        image = str(source["sourceImage"])
        if images is None:
            op.error = _error(
                "ResourceNotFound", f"Source registry {source.get('resourceId')} was not found."
            )["error"]
        elif image not in images:
            op.error = _error("NotFound", f"Source image {image} was not found in the source registry.")[
                "error"
            ]
        else:
            op.digest = images[image]
        if body.get("mode", "NoForce") == "NoForce" and not op.error:
            clash = [t for t in tags if self.registries[target].get(t) not in (None, op.digest)]
            if clash:
                op.error = _error("Conflict", f"Tag(s) {clash} already exist; use mode Force.")["error"]
        self.operations[name] = op
        base = call.path.split("/providers/", 1)[0]
        op_path = (
            f"{base}/providers/Microsoft.ContainerRegistry/locations/{self.location}/operationResults/{name}"
        )
        url = f"https://{call.host}{op_path}?api-version={call.api_version}"
        return 202, None, {"Azure-AsyncOperation": url, "Location": url + "&final=1", "Retry-After": "1"}

    def _operation(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        name = call.path.rsplit("/", 1)[1]
        op = self.operations.get(name)
        if op is None:
            return 404, _error("NotFound", f"Operation {name} not found."), {}
        if op.status == "InProgress":
            if op.polls_left > 0:
                op.polls_left -= 1
            elif op.error:
                op.status = "Failed"
            else:
                op.status = "Succeeded"
                for tag in op.tags:
                    self.registries[op.target][tag] = op.digest
                    self.registries[op.target][f"{tag.split(':')[0]}@{op.digest}"] = op.digest
        if call.query.get("final"):  # the Location URL
            if op.status == "InProgress":
                return 202, None, {"Retry-After": "1"}
            if op.status == "Failed":
                return 400, {"error": op.error}, {}
            return 200, None, {}
        body: dict[str, Any] = {"name": name, "status": op.status}
        if op.status == "Failed":
            body["error"] = op.error
        return 200, body, {}


def _error(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
