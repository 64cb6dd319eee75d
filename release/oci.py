"""OCI registries: push a built image, resolve digests, copy a digest between registries, provenance.

* :func:`push_image` pushes through the Docker engine (docker SDK) and returns the manifest
  digest the registry reports, checked over the registry's v2 HTTP API.
* :class:`RegistryClient` speaks the registry v2 HTTP API (manifests and blobs) with bounded
  timeouts; :func:`copy_image` copies one digest from a repository to another (same or other
  registry) byte for byte - the manifest is uploaded unchanged, so the digest stays the same and
  nothing is rebuilt.
* :class:`AcrAuth` signs in to Azure Container Registry with an Azure AD token exchanged for an
  ACR refresh token (``POST https://<acr>/oauth2/exchange``); the admin user is never used.
* :func:`record_provenance` appends where a promoted digest came from to a JSON-lines file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import docker
import docker.errors
import requests
from azure.core.credentials import TokenCredential

from release.errors import UserError

log = logging.getLogger(__name__)

ACR_SCOPE = "https://containerregistry.azure.net/.default"
ACR_REFRESH_USER = "00000000-0000-0000-0000-000000000000"  # the docker user name for ACR refresh tokens
HTTP_TIMEOUT_S = 60.0
PUSH_TIMEOUT_S = 1800.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[1], MANIFEST_TYPES[3]
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(UserError):
    """A registry call failed; the message names the registry, repository and what to check."""


def is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in {"127.0.0.1", "localhost", "[::1]"}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- ACR sign-in


@dataclass
class AcrAuth:
    """Azure AD token -> ACR refresh token -> per-scope ACR access tokens.

    ``scheme`` is https for ``<name>.azurecr.io``; tests point ``login_server`` at a local
    HTTP server standing in for ACR.
    """

    login_server: str
    credential: TokenCredential
    tenant_id: str | None = None
    scheme: str = "https"
    timeout_s: float = HTTP_TIMEOUT_S
    _refresh: str | None = field(default=None, repr=False)
    _access: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.login_server}"

    def refresh_token(self) -> str:
        """Exchange the identity's AAD token for an ACR refresh token (cached for this object)."""
        if self._refresh:
            return self._refresh
        aad = self.credential.get_token(ACR_SCOPE).token
        form = {"grant_type": "access_token", "service": self.login_server, "access_token": aad}
        if self.tenant_id:
            form["tenant"] = self.tenant_id
        try:
            resp = requests.post(f"{self.base_url}/oauth2/exchange", data=form, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise RegistryError(
                f"ACR {self.login_server}: token exchange failed: {type(exc).__name__}"
            ) from None
        if resp.status_code != 200:
            raise RegistryError(
                f"ACR {self.login_server}: token exchange answered HTTP {resp.status_code}; the identity "
                "needs the AcrPush (push) or AcrPull (pull) role on the registry"
            )
        token = resp.json().get("refresh_token") if resp.content else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"ACR {self.login_server}: token exchange returned no refresh_token")
        self._refresh = token
        return token

    def docker_auth(self) -> dict[str, str]:
        """``auth_config`` for the docker SDK (docker login with the refresh token)."""
        return {"username": ACR_REFRESH_USER, "password": self.refresh_token()}

    def access_token(self, scope: str, realm: str | None = None, service: str | None = None) -> str:
        if scope in self._access:
            return self._access[scope]
        form = {
            "grant_type": "refresh_token",
            "service": service or self.login_server,
            "scope": scope,
            "refresh_token": self.refresh_token(),
        }
        url = realm or f"{self.base_url}/oauth2/token"
        try:
            resp = requests.post(url, data=form, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise RegistryError(
                f"ACR {self.login_server}: access token failed: {type(exc).__name__}"
            ) from None
        if resp.status_code != 200:
            raise RegistryError(
                f"ACR {self.login_server}: access token for {scope!r} answered HTTP {resp.status_code}"
            )
        token = resp.json().get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"ACR {self.login_server}: no access_token for {scope!r}")
        self._access[scope] = token
        return token


# --------------------------------------------------------------------------- registry v2 API


@dataclass(frozen=True)
class Manifest:
    data: bytes  # exactly the bytes the registry serves (the digest is over these)
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


class RegistryClient:
    """The registry v2 HTTP API of one registry (``host[:port]``), bounded timeouts throughout."""

    def __init__(
        self,
        host: str,
        auth: AcrAuth | None = None,
        scheme: str | None = None,
        timeout_s: float = HTTP_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.auth = auth
        self.scheme = scheme or ("http" if is_local(host) else "https")
        self.timeout_s = timeout_s
        self.session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _request(
        self, method: str, path: str, repo: str, *, push: bool = False, **kwargs: Any
    ) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        headers = dict(kwargs.pop("headers", {}))
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            resp = self.session.request(method, url, headers=headers, **kwargs)
            if resp.status_code == 401 and self.auth is not None:
                challenge = dict(_CHALLENGE_RE.findall(resp.headers.get("WWW-Authenticate", "")))
                scope = challenge.get("scope") or f"repository:{repo}:{'pull,push' if push else 'pull'}"
                token = self.auth.access_token(scope, challenge.get("realm"), challenge.get("service"))
                headers["Authorization"] = f"Bearer {token}"
                if hasattr(kwargs.get("data"), "seek"):
                    kwargs["data"].seek(0)
                resp = self.session.request(method, url, headers=headers, **kwargs)
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {self.host}: {method} {path} failed ({type(exc).__name__}); "
                "is the registry running and reachable?"
            ) from None
        return resp

    def _check(self, resp: requests.Response, what: str, ok: tuple[int, ...]) -> requests.Response:
        if resp.status_code not in ok:
            detail = resp.text[:300].replace("\n", " ")
            raise RegistryError(f"registry {self.host}: {what} answered HTTP {resp.status_code}: {detail}")
        return resp

    def ping(self) -> bool:
        try:
            resp = self.session.get(f"{self.base_url}/v2/", timeout=min(5.0, self.timeout_s))
        except requests.RequestException:
            return False
        return resp.status_code in (200, 401)

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        resp = self._request(
            "GET", f"/v2/{repo}/manifests/{reference}", repo, headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if resp.status_code == 404:
            raise RegistryError(f"registry {self.host}: {repo}:{reference} not found; was it pushed?")
        self._check(resp, f"GET manifest {repo}:{reference}", (200,))
        data = resp.content
        digest = sha256_digest(data)
        served = resp.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise RegistryError(
                f"registry {self.host}: manifest digest {served} does not match its bytes {digest}"
            )
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"registry {self.host}: {repo}@{reference} served bytes with digest {digest}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0] or json.loads(data).get(
            "mediaType", ""
        )
        return Manifest(data=data, media_type=media_type, digest=digest)

    def resolve(self, repo: str, tag: str) -> str:
        return self.get_manifest(repo, tag).digest

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo)
        return resp.status_code == 200

    def get_blob(self, repo: str, digest: str) -> bytes:
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", repo, allow_redirects=True)
        self._check(resp, f"GET blob {repo}@{digest}", (200,))
        data = resp.content
        if sha256_digest(data) != digest:
            raise RegistryError(f"registry {self.host}: blob {digest} in {repo} does not match its digest")
        return data

    def download_blob(self, repo: str, digest: str, fh: BinaryIO) -> None:
        """Stream a blob into ``fh`` (no whole layer in memory), checking its digest."""
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", repo, allow_redirects=True, stream=True)
        self._check(resp, f"GET blob {repo}@{digest}", (200,))
        hasher = hashlib.sha256()
        for chunk in resp.iter_content(chunk_size=1 << 20):
            hasher.update(chunk)
            fh.write(chunk)
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise RegistryError(f"registry {self.host}: blob {digest} in {repo} does not match its digest")
        fh.flush()

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount within one registry (no bytes moved); False if not mounted."""
        query = urlencode({"mount": digest, "from": from_repo})
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/?{query}", repo, push=True)
        return resp.status_code == 201

    def put_blob(self, repo: str, digest: str, data: bytes | BinaryIO) -> None:
        resp = self._check(
            self._request("POST", f"/v2/{repo}/blobs/uploads/", repo, push=True),
            f"start upload to {repo}",
            (202,),
        )
        location = resp.headers.get("Location", "")
        if not location:
            raise RegistryError(f"registry {self.host}: upload to {repo} returned no Location")
        if not location.startswith("http"):
            location = f"{self.base_url}{location}"
        sep = "&" if "?" in location else "?"
        self._check(
            self._request(
                "PUT",
                f"{location}{sep}{urlencode({'digest': digest})}",
                repo,
                push=True,
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            f"upload blob {digest} to {repo}",
            (201,),
        )

    def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> str:
        resp = self._request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            repo,
            push=True,
            data=manifest.data,
            headers={"Content-Type": manifest.media_type},
        )
        self._check(resp, f"PUT manifest {repo}:{reference}", (201,))
        return resp.headers.get("Docker-Content-Digest", manifest.digest)


def _children(manifest: Manifest) -> Iterator[tuple[str, str]]:
    """(kind, digest) of what a manifest refers to: child manifests or config + layer blobs."""
    doc = manifest.json()
    if manifest.media_type in INDEX_TYPES or "manifests" in doc:
        for item in doc.get("manifests", []):
            yield "manifest", str(item["digest"])
        return
    yield "blob", str(doc["config"]["digest"])
    for layer in doc.get("layers", []):
        if layer.get("urls"):  # foreign layers are not stored in the registry
            continue
        yield "blob", str(layer["digest"])


def copy_image(
    src: RegistryClient,
    src_repo: str,
    digest: str,
    dst: RegistryClient,
    dst_repo: str,
    tag: str | None = None,
) -> str:
    """Copy ``src_repo@digest`` to ``dst_repo`` (and tag it) without rebuilding; return the digest.

    Blobs the destination already has are skipped; within one registry they are mounted.
    The manifest bytes are uploaded unchanged, so the destination digest equals ``digest``.
    """
    if not _DIGEST_RE.match(digest):
        raise RegistryError(
            f"{digest!r} is not a sha256 digest (sha256:<64 hex>); promote by digest, not by tag"
        )
    same_registry = src.host == dst.host and src.scheme == dst.scheme

    def copy_manifest(ref: str, tag_as: str | None) -> str:
        manifest = src.get_manifest(src_repo, ref)
        for kind, child in _children(manifest):
            if kind == "manifest":
                copy_manifest(child, None)
            elif not dst.has_blob(dst_repo, child) and not (
                same_registry and dst.mount_blob(dst_repo, child, src_repo)
            ):
                with tempfile.TemporaryFile() as fh:
                    src.download_blob(src_repo, child, fh)
                    fh.seek(0)
                    dst.put_blob(dst_repo, child, fh)
        written = dst.put_manifest(dst_repo, ref, manifest)
        if tag_as:
            written = dst.put_manifest(dst_repo, tag_as, manifest)
        if written != manifest.digest:
            raise RegistryError(
                f"registry {dst.host}: {dst_repo} stored {written}, expected {manifest.digest}"
            )
        return manifest.digest

    copied = copy_manifest(digest, tag)
    check = dst.get_manifest(dst_repo, digest)
    if check.digest != digest:
        raise RegistryError(f"registry {dst.host}: {dst_repo}@{digest} reads back as {check.digest}")
    return copied


# --------------------------------------------------------------------------- push via the engine


@dataclass(frozen=True)
class PushedImage:
    registry: str
    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        """The pinned reference deployments use: ``registry/repo@sha256:...``."""
        return f"{self.registry}/{self.repository}@{self.digest}"


def push_image(
    client: docker.DockerClient,
    image: str,
    registry: str,
    repository: str,
    tag: str,
    auth: AcrAuth | None = None,
    timeout_s: float = PUSH_TIMEOUT_S,
) -> PushedImage:
    """Tag ``image`` as ``registry/repository:tag``, push it, return the registry's digest."""
    target = f"{registry}/{repository}"
    try:
        client.images.get(image).tag(target, tag=tag)
    except docker.errors.ImageNotFound:
        raise RegistryError(f"image {image!r} is not in the engine; run 'genaiops build' first") from None
    auth_config = auth.docker_auth() if auth else None
    started = time.monotonic()
    digest = ""
    try:
        for chunk in client.api.push(target, tag=tag, stream=True, decode=True, auth_config=auth_config):
            if time.monotonic() - started > timeout_s:
                raise RegistryError(f"push of {target}:{tag} took over {timeout_s:.0f} s")
            if "error" in chunk:
                raise RegistryError(f"push of {target}:{tag} failed: {str(chunk['error']).strip()}")
            aux = chunk.get("aux") or {}
            if aux.get("Digest"):
                digest = str(aux["Digest"])
    except docker.errors.APIError as exc:
        raise RegistryError(f"push of {target}:{tag} failed: {exc.explanation}") from None
    # Resolve over the registry API: the digest deployments pin is the one the registry serves.
    served = RegistryClient(registry, auth=auth).resolve(repository, tag)
    if digest and served != digest:
        raise RegistryError(
            f"registry {registry}: {repository}:{tag} is {served}, the push reported {digest}"
        )
    return PushedImage(registry=registry, repository=repository, tag=tag, digest=served)


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Provenance:
    flow: str
    digest: str
    source: str  # registry/repo@digest it was copied from
    destination: str  # registry/repo@digest it now lives at
    source_env: str
    destination_env: str
    labels: dict[str, str] = field(default_factory=dict)
    at: str = ""  # UTC ISO time


def record_provenance(path: Path, record: Provenance) -> Path:
    """Append one promotion record (JSON line) to ``path``; never holds a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(record)
    if not data["at"]:
        data["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(data, sort_keys=True) + "\n")
    return path


def read_provenance(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def image_config_labels(client: RegistryClient, repo: str, digest: str) -> dict[str, str]:
    """The labels of a pushed image, read from its config blob (no pull needed)."""
    manifest = client.get_manifest(repo, digest)
    doc = manifest.json()
    if "config" not in doc:
        return {}
    config = json.loads(client.get_blob(repo, str(doc["config"]["digest"])))
    labels = (config.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}
