"""Promotion into ACR through the ACR import API, at the HTTP boundary.

azure-mgmt-containerregistry 15.0.0 sends its real request (api-version 2025-11-01) to the fake
ARM; ``tests/azure/fake_acr.py`` answers like the service: 202 and an async operation that is
polled to Succeeded, or to Failed with an ARM error body. The request body is also checked
against the SDK's generated model of the API (``ImportImageParameters``).
"""

from __future__ import annotations

import pytest

from release.azure.acr import ImportRequest, import_image, registry_resource_id
from release.azure.clients import AzureCallError, AzureContext
from release.errors import UserError
from tests.azure.conftest import RG, SUB
from tests.azure.fake_acr import FakeAcr
from tests.azure.fake_arm import FakeAzure

DIGEST = "sha256:" + "ab" * 32
DEV_ACR = registry_resource_id("9d3e0c1b-1111-4222-8333-444455556666", "gaops-dev-rg", "gaopsdevacr70dbe")
PROD_ACR = registry_resource_id(SUB, RG.replace("dev", "prod"), "gaopsprodacr1c2d")


@pytest.fixture
def acr(fake: FakeAzure) -> FakeAcr:
    acr = FakeAcr(fake).install()
    acr.add_registry(PROD_ACR)
    acr.add_image(DEV_ACR, "genaiops/web-classification", DIGEST)
    return acr


def _request(image: str = f"genaiops/web-classification@{DIGEST}") -> ImportRequest:
    return ImportRequest(
        source_resource_id=DEV_ACR,
        source_image=image,
        target_registry="gaopsprodacr1c2d",
        target_tags=(
            "genaiops/web-classification:7-1a2b3c4d5e6f",
            "genaiops/web-classification:rev-0123456789ab",
        ),
    )


def test_import_is_a_server_side_copy_by_digest_polled_to_success(
    prod_ctx: AzureContext, fake: FakeAzure, acr: FakeAcr
) -> None:
    import_image(prod_ctx, _request(), timeout_s=30)

    (post,) = fake.find("POST", r"/importImage$")
    assert post.path == f"{PROD_ACR}/importImage"
    assert post.api_version == "2025-11-01"
    # the body is what the API defines: source by resource id (identity), image by digest
    assert post.body == {
        "source": {"resourceId": DEV_ACR, "sourceImage": f"genaiops/web-classification@{DIGEST}"},
        "targetTags": [
            "genaiops/web-classification:7-1a2b3c4d5e6f",
            "genaiops/web-classification:rev-0123456789ab",
        ],
        "mode": "Force",
    }
    assert "credentials" not in post.body["source"]  # no registry password: the caller's identity
    from azure.mgmt.containerregistry.models import ImportImageParameters

    parsed = ImportImageParameters(post.body)
    assert parsed.source.resource_id == DEV_ACR and parsed.mode == "Force"
    # the SDK followed the async operation until it said Succeeded (202, then polls)
    polls = fake.find("GET", r"/operationResults/")
    assert len(polls) >= 3
    assert polls[0].headers.get("Authorization", "").startswith("Bearer ")
    # the image is in the prod registry under both tags, with the same digest
    assert acr.tag_of(PROD_ACR, "genaiops/web-classification:7-1a2b3c4d5e6f") == DIGEST
    assert acr.tag_of(PROD_ACR, "genaiops/web-classification:rev-0123456789ab") == DIGEST


def test_a_failed_import_names_azure_error(prod_ctx: AzureContext, fake: FakeAzure, acr: FakeAcr) -> None:
    missing = "sha256:" + "cd" * 32
    with pytest.raises(AzureCallError) as err:
        import_image(prod_ctx, _request(f"genaiops/web-classification@{missing}"), timeout_s=30)
    message = str(err.value)
    assert "ACR import of genaiops/web-classification@" in message
    assert "was not found in the source registry" in message
    assert acr.tag_of(PROD_ACR, "genaiops/web-classification:7-1a2b3c4d5e6f") is None
    assert fake.find("GET", r"/operationResults/")  # it failed after polling, like the service


def test_an_unknown_target_registry_is_a_clear_error(prod_ctx: AzureContext, acr: FakeAcr) -> None:
    request = ImportRequest(DEV_ACR, f"genaiops/x@{DIGEST}", "gaopsnosuchacr", ("genaiops/x:1",))
    with pytest.raises(AzureCallError, match=r"HTTP 404 ResourceNotFound.*infrastructure deployed"):
        import_image(prod_ctx, request, timeout_s=30)


def test_a_tag_is_never_imported_in_place_of_a_digest(prod_ctx: AzureContext, fake: FakeAzure) -> None:
    with pytest.raises(UserError, match="pinned by digest"):
        import_image(prod_ctx, _request("genaiops/web-classification:latest"), timeout_s=30)
    assert not fake.find("POST", r"/importImage$")
