"""Promotion: skopeo copies by digest between two real registries, the gated image is found by
its labels in the registry named by the push record, checks after the copy, the CLI, and the
ACR sign-in at the HTTP boundary.

The registries are real Debian ``docker-registry`` processes on free 127.0.0.1 ports; images
are small OCI images written here and pushed with skopeo (no Docker needed). ACR is unreachable
here, so its sign-in is tested at the HTTP boundary: a local HTTP server stands in for both the
managed-identity token endpoint (azure-identity's ``ManagedIdentityCredential`` talks to it)
and the ACR login server (``/oauth2/exchange``). The ACR import API is tested in
tests/azure/test_acr_import.py.
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

from release import promotion, skopeo
from release.azure.acr import ACR_REFRESH_USER, AcrAuth
from release.config import REPO_ROOT
from release.errors import UserError
from release.git import git_sha
from release.local_env.net import free_port
from release.local_env.packages import ensure_binary
from release.registry.hashing import content_hash

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
FLOW_HASH = "sha256:" + "1" * 64


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
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"http://{host}/v2/", timeout=2).status_code == 200:
                return proc, host
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"docker-registry did not start on {host}")
        time.sleep(0.1)


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


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def push_test_image(
    tmp: Path, registry: str, repository: str, tags: list[str], labels: dict[str, str], seed: bytes
) -> str:
    """A small real OCI image (config with labels, two layers) pushed with skopeo; its digest."""
    import gzip
    import io
    import tarfile

    layout = tmp / f"layout-{hashlib.sha256(seed + repository.encode()).hexdigest()[:8]}"
    layers = []
    for n, content in enumerate((seed * 40_000, b"second:" + seed)):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            info = tarfile.TarInfo(f"file{n}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        layers.append((raw.getvalue(), gzip.compress(raw.getvalue(), mtime=0)))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(r).hexdigest() for r, _ in layers],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, gz)}
            for _, gz in layers
        ],
    }
    entry = {"mediaType": manifest["mediaType"], **_blob(layout, json.dumps(manifest).encode())}
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    binary = ensure_binary("skopeo", print)
    for tag in tags:
        subprocess.run(
            [
                binary,
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                f"oci:{layout}",
                f"docker://{registry}/{repository}:{tag}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return str(entry["digest"])


def _labels(revision: str, flow_hash: str = FLOW_HASH, flow: str = "demo") -> dict[str, str]:
    return {
        promotion.REVISION_LABEL: revision,
        promotion.FLOW_HASH_LABEL: flow_hash,
        "ai.genaiops.flow": flow,
    }


# --------------------------------------------------------------------------- skopeo copies


def test_copy_between_registries_keeps_the_digest_and_the_labels(
    registries: tuple[str, str], tmp_path: Path
) -> None:
    host_a, host_b = registries
    digest = push_test_image(tmp_path, host_a, "dev/demo", ["v1"], _labels("a" * 40), b"a")

    skopeo.copy(f"{host_a}/dev/demo@{digest}", f"{host_b}/prod/demo:v1")

    copied = skopeo.inspect(f"{host_b}/prod/demo:v1")
    assert copied.digest == digest
    assert copied.labels == _labels("a" * 40)
    # read back over the plain registry HTTP API: the very same manifest bytes
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    src = requests.get(f"http://{host_a}/v2/dev/demo/manifests/{digest}", headers=accept, timeout=10)
    dst = requests.get(f"http://{host_b}/v2/prod/demo/manifests/{digest}", headers=accept, timeout=10)
    assert dst.status_code == 200 and dst.content == src.content
    assert dst.headers["Docker-Content-Digest"] == digest
    # copying again is idempotent
    skopeo.copy(f"{host_a}/dev/demo@{digest}", f"{host_b}/prod/demo:v1")
    assert skopeo.inspect(f"{host_b}/prod/demo@{digest}").digest == digest


def test_copy_needs_a_digest_and_an_existing_image(registries: tuple[str, str]) -> None:
    host_a, host_b = registries
    with pytest.raises(skopeo.RegistryError, match="not pinned by a sha256 digest"):
        skopeo.copy(f"{host_a}/dev/demo:v1", f"{host_b}/prod/demo:v1")
    with pytest.raises(skopeo.RegistryError, match="was it pushed"):
        skopeo.copy(f"{host_a}/dev/absent@sha256:{'0' * 64}", f"{host_b}/prod/absent:v1")


def test_unreachable_registry_is_a_clear_error() -> None:
    with pytest.raises(skopeo.RegistryError, match=r"reading 127\.0\.0\.1.*is the registry running"):
        skopeo.inspect(f"127.0.0.1:{free_port()}/x/y:latest")


# --------------------------------------------------------------------------- what was gated


def test_the_gated_commit_is_found_even_when_a_newer_push_moved_the_tag(
    registries: tuple[str, str], tmp_path: Path
) -> None:
    host_a, _ = registries
    old_rev, new_rev = "a1" * 20, "b2" * 20
    tag = f"7-{FLOW_HASH[7:19]}"
    gated = push_test_image(
        tmp_path, host_a, "dev/gated", [tag, promotion.revision_tag(old_rev)], _labels(old_rev), b"old"
    )
    newer = push_test_image(
        tmp_path, host_a, "dev/gated", [tag, promotion.revision_tag(new_rev)], _labels(new_rev), b"new"
    )
    record = {"registry": host_a, "repository": "dev/gated", "digest": newer, "tag": tag}

    found = promotion.find_gated_image(record, promotion.Expected("demo", old_rev, FLOW_HASH))
    assert found.digest == gated != newer
    assert found.reference == f"{host_a}/dev/gated@{gated}"
    # the record's own digest when it is the one
    assert promotion.find_gated_image(record, promotion.Expected("demo", new_rev, FLOW_HASH)).digest == newer

    with pytest.raises(promotion.PromotionError) as err:
        promotion.find_gated_image(record, promotion.Expected("demo", "c3" * 20, FLOW_HASH))
    message = str(err.value)
    assert f"in {host_a}/dev/gated (push record of 'dev')" in message
    assert "revision " + "c3" * 6 in message and f"revision {new_rev} != {'c3' * 20}" in message
    with pytest.raises(promotion.PromotionError, match="flow hash"):
        promotion.find_gated_image(record, promotion.Expected("demo", new_rev, "sha256:" + "9" * 64))


def test_a_record_without_a_registry_is_refused() -> None:
    with pytest.raises(promotion.PromotionError, match=r"has no 'registry'.*genaiops push --flow demo"):
        promotion.find_gated_image(
            {"repository": "x", "digest": "sha256:" + "0" * 64},
            promotion.Expected("demo", "a" * 40, FLOW_HASH),
        )


def test_the_copy_is_checked_at_the_destination(registries: tuple[str, str], tmp_path: Path) -> None:
    host_a, host_b = registries
    digest = push_test_image(tmp_path, host_a, "dev/checked", ["v1"], _labels("d" * 40), b"checked")
    source = promotion.SourceImage(host_a, "dev/checked", digest, _labels("d" * 40))
    with pytest.raises(skopeo.RegistryError, match="was it pushed"):  # nothing copied yet
        promotion.verify_copy(f"{host_b}/prod/checked", source)
    skopeo.copy(source.reference, f"{host_b}/prod/checked:v1")
    assert promotion.verify_copy(f"{host_b}/prod/checked", source).digest == digest
    tampered = promotion.SourceImage(host_a, "dev/checked", digest, _labels("e" * 40))
    with pytest.raises(promotion.PromotionError, match=r"labels differ.*org.opencontainers.image.revision"):
        promotion.verify_copy(f"{host_b}/prod/checked", tampered)


# --------------------------------------------------------------------------- the CLI


def test_promote_copies_the_image_gated_for_the_commit_from_the_recorded_registry(
    registries: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    image_cli: Any,
) -> None:
    from release.image import load_record, save_record

    _cli = image_cli
    host_a, host_b = registries
    commit = git_sha()
    assert commit, "the tests run in a git checkout"
    flow_hash = content_hash(REPO_ROOT / "flows" / "web_classification")
    repo = "genaiops/web-classification"
    other = push_test_image(
        tmp_path, host_a, repo, ["5-other"], _labels("f" * 40, flow_hash, "web_classification"), b"x"
    )
    monkeypatch.setenv("GENAIOPS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("GENAIOPS_REGISTRY_PORT", host_b.rsplit(":", 1)[1])
    # dev's push record names its registry (host_a: nothing in config/dev.yaml says so)
    record = {
        "flow": "web_classification",
        "registry": host_a,
        "repository": repo,
        "tag": "5-other",
        "digest": other,
    }
    save_record("dev", "web_classification", "push", record)

    # the commit being promoted was never built in dev: refused, nothing copied
    assert _cli("promote", "--flow", "web_classification", "--from", "dev", "--to", "local") == 2
    out = capsys.readouterr().out
    assert f"no image of flow 'web_classification' in {host_a}/{repo}" in out and commit[:12] in out
    assert skopeo.list_tags(f"{host_b}/{repo}") == []

    labels = _labels(commit, flow_hash, "web_classification")
    gated = push_test_image(tmp_path, host_a, repo, ["5-gated", promotion.revision_tag(commit)], labels, b"g")
    assert _cli("promote", "--flow", "web_classification", "--from", "dev", "--to", "local") == 0
    out = capsys.readouterr().out
    assert f"promoted {host_a}/{repo}@{gated} -> {host_b}/{repo}@{gated} by skopeo" in out
    assert (
        skopeo.inspect(f"{host_b}/{repo}:5-other").digest == gated
    )  # the record's tag name, the gated digest
    assert skopeo.inspect(f"{host_b}/{repo}:{promotion.revision_tag(commit)}").labels == labels
    promoted = load_record("local", "web_classification", "push")
    assert (
        promoted is not None and promoted["digest"] == gated and promoted["promoted_from"].startswith(host_a)
    )
    (entry,) = promotion.read_provenance(tmp_path / "images" / "local" / "provenance.jsonl")
    assert entry["method"] == "skopeo" and entry["labels"] == labels and entry["at"].endswith("Z")


def test_promote_without_a_push_record_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], image_cli: Any
) -> None:
    _cli = image_cli
    monkeypatch.setenv("GENAIOPS_IMAGES_DIR", str(tmp_path))
    assert _cli("promote", "--flow", "web_classification", "--from", "dev", "--to", "local") == 2
    assert "environment 'dev' has no push record of 'web_classification'" in capsys.readouterr().out
    assert _cli("promote", "--flow", "web_classification", "--env", "local") == 2
    assert "no environment before it" in capsys.readouterr().out


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

    # skopeo gets the same sign-in (an auth file, never a command line)
    creds = auth.credentials()
    assert (creds.host, creds.username, creds.password) == (
        fake_azure.login_server,
        ACR_REFRESH_USER,
        "acr-refresh-token",
    )
    assert "acr-refresh-token" not in repr(creds)
    # the exchange happened once and no basic (admin) credentials were ever sent
    assert len([r for r in fake_azure.requests if r["path"] == "/oauth2/exchange"]) == 1
    assert not any(r["headers"].get("authorization", "").startswith("Basic") for r in fake_azure.requests)


def test_unreachable_acr_is_a_clear_error(fake_azure: _FakeAzure) -> None:
    from azure.identity import ManagedIdentityCredential

    auth = AcrAuth(f"127.0.0.1:{free_port()}", ManagedIdentityCredential(), scheme="http", timeout_s=3)
    with pytest.raises(UserError, match="token exchange failed"):
        auth.refresh_token()
