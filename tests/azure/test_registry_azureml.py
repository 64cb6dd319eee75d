"""Azure ML registration at the HTTP boundary: a version only when the content hash changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from release.azure.clients import AzureContext
from release.config import EnvironmentConfig
from release.registry.azureml import HASH_KEY, AzureMLRegistry
from release.registry.base import Selection
from release.registry.hashing import content_hash
from tests.azure.conftest import SUB, WS_PATH
from tests.azure.fake_arm import TOKEN, FakeAzure

ACCOUNT = "gaopsdevsta934f"
BLOB_HOST = f"{ACCOUNT}.blob.core.windows.net"
# azure-ai-ml 1.35.2 api-versions for data and model versions (shapes as in 2024-04-01)
DATA_API = "2023-04-01-preview"
MODEL_API = "2023-08-01-preview"


@pytest.fixture
def registry(dev_config: EnvironmentConfig, dev_ctx: AzureContext, fake: FakeAzure) -> AzureMLRegistry:
    fake.put_resource(
        f"{WS_PATH}/datastores/workspaceblobstore",
        {
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": ACCOUNT,
                "containerName": "azureml-blobstore-1234",
                "endpoint": "core.windows.net",
                "protocol": "https",
                "credentials": {"credentialsType": "None"},
                "isDefault": True,
            }
        },
    )
    return AzureMLRegistry(dev_config, dev_ctx)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"url": "http://127.0.0.1/a", "answer": "App"}\n')
    (folder / "eval.jsonl").write_text('{"url": "http://127.0.0.1/b", "answer": "Academic"}\n')
    return folder


def ml_puts(fake: FakeAzure) -> list:
    return [c for c in fake.calls if c.method == "PUT" and c.host == "management.azure.com"]


def test_data_registered_once_then_again_when_one_byte_changes(
    registry: AzureMLRegistry, fake: FakeAzure, dataset: Path
) -> None:
    first = registry.register_data("wc-eval", dataset, git_sha="abc1234", tags={"flow": "web_classification"})
    digest = content_hash(dataset)
    assert first.created and first.version == "1" and first.content_hash == digest

    blobs = [c for c in fake.calls if c.method == "PUT" and c.host == BLOB_HOST]
    prefix = f"/azureml-blobstore-1234/genaiops/data/wc-eval/{digest.split(':')[1]}"
    assert sorted(c.path for c in blobs) == [f"{prefix}/eval.jsonl", f"{prefix}/train.jsonl"]
    assert all(c.headers["Authorization"] == f"Bearer {TOKEN}" for c in blobs)  # identity, no key
    assert not fake.find("POST", r"/listSecrets$")

    [put] = ml_puts(fake)
    assert put.path == f"{WS_PATH}/data/wc-eval/versions/1"
    assert put.api_version == DATA_API
    props = put.body["properties"]
    assert props["dataType"] == "uri_folder"
    assert (
        props["dataUri"]
        == f"azureml://datastores/workspaceblobstore/paths/genaiops/data/wc-eval/{digest.split(':')[1]}/"
    )
    assert props["tags"] == {"flow": "web_classification", HASH_KEY: digest, "genaiops.git_sha": "abc1234"}
    assert props["properties"][HASH_KEY] == digest

    writes = len(fake.writes())
    again = registry.register_data("wc-eval", dataset, git_sha="def5678")
    assert not again.created and again.version == "1" and again.content_hash == digest
    assert again.git_sha == "abc1234" and again.tags == {"flow": "web_classification"}
    assert len(fake.writes()) == writes  # same content: no upload, no PUT

    (dataset / "eval.jsonl").write_text('{"url": "http://127.0.0.1/b", "answer": "Academia"}\n')
    second = registry.register_data("wc-eval", dataset)
    assert second.created and second.version == "2" and second.content_hash != digest
    assert ml_puts(fake)[-1].path == f"{WS_PATH}/data/wc-eval/versions/2"
    assert registry.latest("data", "wc-eval") == second.__class__(
        "data", "wc-eval", "2", second.content_hash, False, None, {}
    )


def test_single_file_dataset_is_uri_file(registry: AzureMLRegistry, fake: FakeAzure, dataset: Path) -> None:
    registry.register_data("wc-train", dataset / "train.jsonl")
    [put] = ml_puts(fake)
    assert put.body["properties"]["dataType"] == "uri_file"
    assert put.body["properties"]["dataUri"].endswith("/train.jsonl")


def test_flow_is_a_model_and_selection_is_its_baseline(
    registry: AzureMLRegistry, fake: FakeAzure, tmp_path: Path
) -> None:
    flow = tmp_path / "web_classification"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text("inputs: {url: {type: string}}\n")
    (flow / "__pycache__").mkdir()
    (flow / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    reg = registry.register_flow("web_classification", flow, git_sha="abc1234")
    assert reg.created and reg.version == "1"
    [put] = [c for c in ml_puts(fake) if "/models/" in c.path]
    assert put.path == f"{WS_PATH}/models/web_classification/versions/1"
    assert put.api_version == MODEL_API
    props = put.body["properties"]
    assert props["modelType"] == "custom_model"
    hexdigest = content_hash(flow).split(":")[1]
    # the SDK writes the long form of the datastore URI for models
    assert props["modelUri"] == (
        f"azureml://subscriptions/{SUB}/resourcegroups/gaops-dev-rg/workspaces/gaops-dev-mlw/"
        f"datastores/workspaceblobstore/paths/genaiops/flow/web_classification/{hexdigest}/"
    )
    assert props["properties"]["is-promptflow"] == "true"
    assert not [c for c in fake.calls if c.path.endswith(".pyc")]  # caches are not part of the content

    assert registry.baseline("web_classification") is None
    selection = Selection(
        flow="web_classification",
        flow_version="1",
        variant_id="summarize=variant_1",
        variant={"variants": {"summarize": "variant_1"}, "params": {}},
        metrics={"accuracy": 0.9},
        experiment_run="exp-20261124",
        git_sha="abc1234",
    )
    registry.record_selection(selection)
    assert registry.baseline("web_classification") == selection
    assert registry.register_flow("web_classification", flow).created is False


def test_missing_path_is_a_clear_error(registry: AzureMLRegistry, fake: FakeAzure, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        registry.register_data("wc-eval", tmp_path / "nope")
    assert fake.writes() == []
