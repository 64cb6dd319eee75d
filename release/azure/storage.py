"""Upload a flow or dataset folder to the workspace's default datastore, content-addressed.

Blobs go to ``genaiops/<kind>/<name>/<hash>/<relative path>`` with the deployer's Azure
identity (Storage Blob Data Contributor; never account keys or SAS from ``listSecrets``), so the
same content always lands at the same path and an interrupted upload is simply repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from azure.ai.ml import MLClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from release.azure.clients import AzureContext, find, must
from release.errors import UserError
from release.registry.hashing import content_files


@dataclass(frozen=True)
class Uploaded:
    uri: str  # azureml://datastores/<datastore>/paths/<prefix>/[file]
    files: int


def default_container(ctx: AzureContext, ml: MLClient) -> tuple[str, ContainerClient]:
    """The workspace's default datastore name and its blob container, reached with the identity."""
    datastore = must("get the workspace's default datastore", lambda: ml.datastores.get_default())
    account = getattr(datastore, "account_name", None)
    container_name = getattr(datastore, "container_name", None)
    if not account or not container_name:
        raise UserError(
            f"workspace {ctx.workspace}: the default datastore {datastore.name!r} is not blob storage; "
            "set a blob datastore as default"
        )
    protocol = getattr(datastore, "protocol", None) or "https"
    endpoint = getattr(datastore, "endpoint", None) or "core.windows.net"
    service = BlobServiceClient(
        f"{protocol}://{account}.blob.{endpoint}", credential=ctx.credential, **ctx.sdk_kwargs()
    )
    return str(datastore.name), service.get_container_client(container_name)


def upload(ctx: AzureContext, ml: MLClient, path: Path, prefix: str) -> Uploaded:
    datastore, container = default_container(ctx, ml)
    files = list(content_files(path))
    for rel, file in files:
        blob = f"{prefix}/{rel}"
        data = file.read_bytes()
        must(f"upload {blob}", lambda b=blob, d=data: container.upload_blob(b, d, overwrite=True))  # type: ignore[misc]
    tail = files[0][0] if path.is_file() else ""
    return Uploaded(f"azureml://datastores/{datastore}/paths/{prefix}/{tail}", len(files))


def download(ctx: AzureContext, ml: MLClient, blob: str) -> bytes | None:
    """One blob of the default datastore, or None when it does not exist."""
    _, container = default_container(ctx, ml)
    stream = find(f"download {blob}", lambda: container.download_blob(blob))
    return None if stream is None else bytes(stream.readall())
