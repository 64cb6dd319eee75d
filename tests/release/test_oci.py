"""Registry API, digest copy between two real registry processes, provenance, ACR sign-in.

The registries are real Debian ``docker-registry`` processes on free 127.0.0.1 ports. ACR is
unreachable here, so its sign-in is tested at the HTTP boundary: a local HTTP server stands in
for both the managed-identity token endpoint (azure-identity's ``ManagedIdentityCredential``
talks to it) and the ACR login server (``/oauth2/exchange``, ``/oauth2/token``, ``/v2/``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from release.errors import UserError
from release.local_env.net import free_port
from release.local_env.packages import ensure_binary
from release.oci import (
    ACR_REFRESH_USER,
    AcrAuth,
    Manifest,
    Provenance,
    RegistryClient,
    RegistryError,
    copy_image,
    read_provenance,
    record_provenance,
)

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def _start_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = ensure_binary("docker-registry", print)
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    host = f"127.0.0.1:{port}"
    client = RegistryClient(host, timeout_s=5)
    deadline = time.monotonic() + 20
    while not client.ping():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"docker-registry did not start on {host}")
        time.sleep(0.1)
    return proc, host


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    base = tmp_path_factory.mktemp("registries")
    first, host_a = _start_registry(base / "a")
    second, host_b = _start_registry(base / "b")
    yield host_a, host_b
    for proc in (first, second):
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _push_synthetic_image(client: RegistryClient, repo: str, tag: str, seed: bytes) -> Manifest:
    """A small but real image: a config blob and two layer blobs, then the manifest."""
    layers = [seed * 50_000, b"layer-two:" + seed * 1000]
    config = json.dumps({"config": {"Labels": {"ai.genaiops.flow": "demo"}}, "rootfs": {}}).encode()
    for blob in [config, *layers]:
        client.put_blob(repo, "sha256:" + hashlib.sha256(blob).hexdigest(), blob)
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(blob),
                "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
            }
            for blob in layers
        ],
    }
    # deliberately unusual formatting: a copy must keep these exact bytes
    data = json.dumps(doc, indent=3).encode()
    manifest = Manifest(
        data=data, media_type=MANIFEST_V2, digest="sha256:" + hashlib.sha256(data).hexdigest()
    )
    client.put_manifest(repo, tag, manifest)
    return manifest


def test_copy_between_registries_keeps_the_digest_byte_for_byte(
    registries: tuple[str, str], tmp_path: Path
) -> None:
    host_a, host_b = registries
    src, dst = RegistryClient(host_a), RegistryClient(host_b)
    pushed = _push_synthetic_image(src, "dev/demo", "v1", b"a")

    digest = copy_image(src, "dev/demo", pushed.digest, dst, "prod/demo", "v1")

    assert digest == pushed.digest
    # pulled by digest over the plain v2 HTTP API: the very same bytes
    resp = requests.get(
        f"http://{host_b}/v2/prod/demo/manifests/{digest}", headers={"Accept": MANIFEST_V2}, timeout=10
    )
    assert resp.status_code == 200
    assert resp.content == pushed.data
    assert resp.headers["Docker-Content-Digest"] == digest
    assert dst.resolve("prod/demo", "v1") == digest
    for layer in json.loads(pushed.data)["layers"]:
        assert dst.get_blob("prod/demo", layer["digest"]) == src.get_blob("dev/demo", layer["digest"])

    # copying again is idempotent (blobs are skipped, the digest is unchanged)
    assert copy_image(src, "dev/demo", digest, dst, "prod/demo", "v1") == digest

    log = record_provenance(
        tmp_path / "provenance.jsonl",
        Provenance(
            flow="demo",
            digest=digest,
            source=f"{host_a}/dev/demo@{digest}",
            destination=f"{host_b}/prod/demo@{digest}",
            source_env="dev",
            destination_env="prod",
            labels={"ai.genaiops.flow": "demo"},
        ),
    )
    (entry,) = read_provenance(log)
    assert entry["source"].endswith(f"dev/demo@{digest}")
    assert entry["destination"].startswith(host_b)
    assert entry["at"].endswith("Z")


def test_copy_within_one_registry_mounts_and_keeps_the_digest(registries: tuple[str, str]) -> None:
    host_a, _ = registries
    client = RegistryClient(host_a)
    pushed = _push_synthetic_image(client, "dev/mounted", "v1", b"m")
    assert copy_image(client, "dev/mounted", pushed.digest, client, "prod/mounted", "v7") == pushed.digest
    assert client.get_manifest("prod/mounted", "v7").data == pushed.data


def test_promotion_needs_a_digest_and_an_existing_image(registries: tuple[str, str]) -> None:
    host_a, host_b = registries
    src, dst = RegistryClient(host_a), RegistryClient(host_b)
    with pytest.raises(UserError, match="not a sha256 digest"):
        copy_image(src, "dev/demo", "v1", dst, "prod/demo")
    with pytest.raises(RegistryError, match="not found"):
        copy_image(src, "dev/absent", "sha256:" + "0" * 64, dst, "prod/absent")


def test_unreachable_registry_is_a_clear_error() -> None:
    client = RegistryClient(f"127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(RegistryError, match="is the registry running"):
        client.get_manifest("x/y", "latest")


# --------------------------------------------------------------------------- ACR at the HTTP boundary


class _FakeAzure:
    """Records every request; answers like the managed-identity endpoint and an ACR login server."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.login_server = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                entry = {
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                    "form": {k: v[0] for k, v in parse_qs(body).items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
                fake.requests.append(entry)
                return entry

            def do_GET(self) -> None:
                entry = self._record()
                if entry["path"] == "/msi/token":
                    self._reply(
                        200,
                        {
                            "access_token": "aad-token-for-acr",
                            "expires_on": str(int(time.time()) + 3600),
                            "resource": entry["query"].get("resource", ""),
                            "token_type": "Bearer",
                        },
                    )
                elif entry["path"].startswith("/v2/"):
                    if entry["headers"].get("authorization") != "Bearer acr-access-token":
                        challenge = (
                            f'Bearer realm="http://{fake.login_server}/oauth2/token",'
                            f'service="{fake.login_server}",scope="repository:flows/demo:pull"'
                        )
                        self._reply(
                            401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge}
                        )
                        return
                    data = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_V2, "layers": []}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", MANIFEST_V2)
                    self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._reply(404, {})

            def do_POST(self) -> None:
                entry = self._record()
                if entry["path"] == "/oauth2/exchange":
                    self._reply(200, {"refresh_token": "acr-refresh-token"})
                elif entry["path"] == "/oauth2/token":
                    self._reply(200, {"access_token": "acr-access-token"})
                else:
                    self._reply(404, {})

        return Handler


@pytest.fixture()
def fake_azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeAzure]:
    fake = _FakeAzure()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    host = f"127.0.0.1:{server.server_address[1]}"
    fake.login_server = host
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    # azure-identity's App Service managed identity: IDENTITY_ENDPOINT + IDENTITY_HEADER
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://{host}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "local-test-header")
    for name in (
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IMDS_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    yield fake
    server.shutdown()
    server.server_close()


def test_acr_sign_in_exchanges_an_azure_ad_token_never_the_admin_user(fake_azure: _FakeAzure) -> None:
    from azure.identity import ManagedIdentityCredential

    tenant = "11111111-2222-3333-4444-555555555555"
    auth = AcrAuth(fake_azure.login_server, ManagedIdentityCredential(), tenant_id=tenant, scheme="http")

    docker_login = auth.docker_auth()
    assert docker_login == {"username": ACR_REFRESH_USER, "password": "acr-refresh-token"}

    msi = [r for r in fake_azure.requests if r["path"] == "/msi/token"]
    assert msi and msi[0]["query"]["resource"] == "https://containerregistry.azure.net"
    assert msi[0]["headers"]["x-identity-header"] == "local-test-header"
    exchange = [r for r in fake_azure.requests if r["path"] == "/oauth2/exchange"]
    assert len(exchange) == 1
    assert exchange[0]["method"] == "POST"
    assert exchange[0]["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert exchange[0]["form"] == {
        "grant_type": "access_token",
        "service": fake_azure.login_server,
        "tenant": tenant,
        "access_token": "aad-token-for-acr",
    }

    # the registry API: 401 challenge -> access token from the refresh token -> Bearer
    client = RegistryClient(fake_azure.login_server, auth=auth, scheme="http")
    manifest = client.get_manifest("flows/demo", "v1")
    assert json.loads(manifest.data)["schemaVersion"] == 2
    token = [r for r in fake_azure.requests if r["path"] == "/oauth2/token"]
    assert token[0]["form"] == {
        "grant_type": "refresh_token",
        "service": fake_azure.login_server,
        "scope": "repository:flows/demo:pull",
        "refresh_token": "acr-refresh-token",
    }
    final = [r for r in fake_azure.requests if r["path"].startswith("/v2/")][-1]
    assert final["headers"]["authorization"] == "Bearer acr-access-token"
    # the exchange happened once and no basic (admin) credentials were ever sent
    assert len([r for r in fake_azure.requests if r["path"] == "/oauth2/exchange"]) == 1
    assert not any(r["headers"].get("authorization", "").startswith("Basic") for r in fake_azure.requests)


def test_unreachable_acr_is_a_clear_error(fake_azure: _FakeAzure) -> None:
    from azure.identity import ManagedIdentityCredential

    auth = AcrAuth(f"127.0.0.1:{free_port()}", ManagedIdentityCredential(), scheme="http", timeout_s=3)
    with pytest.raises(RegistryError, match="token exchange failed"):
        auth.refresh_token()
