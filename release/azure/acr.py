"""Azure Container Registry: sign-in with an Azure identity, and promotion by server-side import.

* :class:`AcrAuth`: the identity's Azure AD token is exchanged for an ACR refresh token
  (``POST https://<registry>/oauth2/exchange``), which ``docker push`` and ``skopeo`` use with
  the user name ``00000000-0000-0000-0000-000000000000``. The admin user is never used.
  Protocol: https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md
* :func:`import_image`: ``registries.begin_import_image`` of azure-mgmt-containerregistry
  (ARM ``POST .../registries/{name}/importImage``, a long-running operation). ACR copies the
  image itself, by digest, from the source registry named by its **resource id**: no layer
  passes through the agent, and the source is read with the caller's Azure identity (it needs
  ``Microsoft.ContainerRegistry/registries/pull/read``, e.g. AcrPull, on the source registry
  and ``.../importImage/action``, e.g. Contributor or "Container Registry Data Importer and Data
  Reader", on the target).
  API: https://learn.microsoft.com/rest/api/containerregistry/registries/import-image
  How-to: https://learn.microsoft.com/azure/container-registry/container-registry-import-images
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests
from azure.core.credentials import TokenCredential

from release.azure.clients import AzureContext, must, wait_lro
from release.errors import UserError
from release.skopeo import Credentials

ACR_SCOPE = "https://containerregistry.azure.net/.default"
ACR_REFRESH_USER = "00000000-0000-0000-0000-000000000000"  # the user name for ACR refresh tokens
HTTP_TIMEOUT_S = 60.0
IMPORT_TIMEOUT_S = 1800.0


def registry_resource_id(subscription_id: str, resource_group: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{name}"
    )


def registry_name(login_server: str) -> str:
    """``gaopsprodacr1a2b.azurecr.io`` -> ``gaopsprodacr1a2b``."""
    return login_server.split(".", 1)[0]


@dataclass
class AcrAuth:
    """Azure AD token -> ACR refresh token, for ``docker push`` and ``skopeo``.

    ``scheme`` is https for ``<name>.azurecr.io``; tests point ``login_server`` at a local
    HTTP server standing in for ACR.
    """

    login_server: str
    credential: TokenCredential
    tenant_id: str | None = None
    scheme: str = "https"
    timeout_s: float = HTTP_TIMEOUT_S
    _refresh: str | None = field(default=None, repr=False)

    def refresh_token(self) -> str:
        """Exchange the identity's AAD token for an ACR refresh token (cached for this object)."""
        if self._refresh:
            return self._refresh
        aad = self.credential.get_token(ACR_SCOPE).token
        form = {"grant_type": "access_token", "service": self.login_server, "access_token": aad}
        if self.tenant_id:
            form["tenant"] = self.tenant_id
        url = f"{self.scheme}://{self.login_server}/oauth2/exchange"
        try:
            resp = requests.post(url, data=form, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UserError(f"ACR {self.login_server}: token exchange failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise UserError(
                f"ACR {self.login_server}: token exchange answered HTTP {resp.status_code}; the identity "
                "needs the AcrPush (push) or AcrPull (pull) role on the registry"
            )
        token = resp.json().get("refresh_token") if resp.content else None
        if not isinstance(token, str) or not token:
            raise UserError(f"ACR {self.login_server}: token exchange returned no refresh_token")
        self._refresh = token
        return token

    def docker_auth(self) -> dict[str, str]:
        """``auth_config`` for the docker SDK (docker login with the refresh token)."""
        return {"username": ACR_REFRESH_USER, "password": self.refresh_token()}

    def credentials(self) -> Credentials:
        """The same sign-in for skopeo (written to a 0600 auth file, never a command line)."""
        return Credentials(self.login_server, ACR_REFRESH_USER, self.refresh_token())


@dataclass(frozen=True)
class ImportRequest:
    """What to import: ``source_image`` is ``repo@sha256:...`` in the registry ``source_resource_id``."""

    source_resource_id: str
    source_image: str
    target_registry: str  # name of the target registry (in ctx's subscription and resource group)
    target_tags: tuple[str, ...]  # "repo:tag"


def import_image(ctx: AzureContext, request: ImportRequest, timeout_s: float = IMPORT_TIMEOUT_S) -> None:
    """Run the ACR import (server side) and wait for it, at most ``timeout_s``.

    Raises :class:`release.azure.clients.AzureCallError` naming Azure's error when the
    operation fails (e.g. ``Failed`` with the source manifest not found).
    """
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import ImportImageParameters, ImportMode, ImportSource

    if "@sha256:" not in request.source_image:
        raise UserError(
            f"ACR import of {request.source_image!r}: the source must be pinned by digest (repo@sha256:...)"
        )
    client = ContainerRegistryManagementClient(ctx.credential, ctx.subscription_id, **ctx.sdk_kwargs())
    parameters = ImportImageParameters(
        source=ImportSource(resource_id=request.source_resource_id, source_image=request.source_image),
        target_tags=list(request.target_tags),
        mode=ImportMode.FORCE,  # the tag moves to the promoted digest; the digest itself is immutable
    )
    what = f"ACR import of {request.source_image} into {request.target_registry}"
    poller = must(
        what,
        lambda: client.registries.begin_import_image(ctx.resource_group, request.target_registry, parameters),
    )
    wait_lro(poller, what, timeout_s)
