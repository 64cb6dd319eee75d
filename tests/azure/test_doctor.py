"""``genaiops doctor`` at the HTTP boundary: the official SDK clients (authorization, resources)
and the data-plane probes talk to the fake ARM, which answers like the services (role assignment
lists, provider registration, Azure ML usages and VM sizes, 403 network rules, DNS failures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra import naming
from infra.roles import PRIVILEGED, ROLES
from release.azure import doctor
from release.azure.clients import AzureContext
from release.commands.doctor import report
from release.config import EnvironmentConfig
from tests.azure.conftest import ENVIRON, SUB, WS_PATH
from tests.azure.fake_arm import FakeAzure, Topology

CALLER = "33333333-3333-3333-3333-333333333333"  # the oid claim of fake_arm.TOKEN
REPO = Path(__file__).resolve().parents[2]
AOAI_ID = (
    f"/subscriptions/{SUB}/resourceGroups/ai-rg/providers/Microsoft.CognitiveServices/accounts/gaops-aoai"
)


def role_id(name: str) -> str:
    return PRIVILEGED.get(name) or ROLES[name].definition_id


def assign(fake: FakeAzure, scope: str, role: str, n: int) -> None:
    name = f"00000000-0000-4000-8000-{n:012d}"
    key = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
    fake.store[key.lower()] = {
        "id": key,
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role_id(role)}",
            "principalId": CALLER,
            "principalType": "ServicePrincipal",
            "scope": scope,
        },
    }


def register_providers(fake: FakeAzure, not_registered: tuple[str, ...] = ()) -> None:
    for namespace in doctor.PROVIDERS:
        key = f"/subscriptions/{SUB}/providers/{namespace}"
        state = "NotRegistered" if namespace in not_registered else "Registered"
        fake.store[key.lower()] = {
            "id": key,
            "namespace": namespace,
            "registrationState": state,
            "resourceTypes": [],
        }


def ml_location(fake: FakeAzure, limit: int, used: int = 0) -> None:
    """Azure ML's vmSizes and usages lists (shapes of the 2024-04-01 REST examples)."""
    sizes = {
        "value": [
            {
                "name": "Standard_DS3_v2",
                "family": "standardDSv2Family",
                "vCPUs": 4,
                "gpus": 0,
                "memoryGB": 14.0,
            },
            {
                "name": "Standard_DS1_v2",
                "family": "standardDSv2Family",
                "vCPUs": 1,
                "gpus": 0,
                "memoryGB": 3.5,
            },
        ]
    }
    usages = {
        "value": [
            {
                "id": f"/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/westeurope/usages/x",
                "type": "Microsoft.MachineLearningServices/totalCores",
                "unit": "Count",
                "currentValue": used,
                "limit": limit,
                "name": {"value": "standardDSv2Family", "localizedValue": "Standard DSv2 Family Cores"},
            }
        ]
    }
    fake.on("GET", r"/locations/westeurope/vmSizes$", lambda c: (200, sizes))
    fake.on("GET", r"/locations/westeurope/usages$", lambda c: (200, usages))


def data_planes(fake: FakeAzure) -> None:
    """Unauthenticated answers of reachable services: 401 with a challenge."""
    challenge = {"WWW-Authenticate": 'Bearer realm="https://x/oauth2/token"'}
    fake.on("GET", r"^/v2/$", lambda c: (401, {"errors": [{"code": "UNAUTHORIZED"}]}, challenge))
    fake.on("GET", r"^/secrets$", lambda c: (401, {"error": {"code": "Unauthorized"}}, challenge))
    fake.on("GET", r"^/score$", lambda c: (401, None, challenge))


def aoai_config(cfg: EnvironmentConfig) -> EnvironmentConfig:
    [aoai] = cfg.connections
    return cfg.model_copy(update={"connections": [aoai.model_copy(update={"resource_id": AOAI_ID})]})


@pytest.fixture
def healthy(fake: FakeAzure, dev_config: EnvironmentConfig) -> FakeAzure:
    register_providers(fake)
    scopes = doctor._scopes(dev_config)
    assign(fake, scopes["subscription"], "Contributor", 1)
    assign(fake, scopes["subscription"], "User Access Administrator", 2)
    ml_location(fake, limit=24)
    data_planes(fake)
    fake.put_resource(
        f"{WS_PATH}/onlineEndpoints/gaops-dev-web-classification",
        {"location": "westeurope", "properties": {"authMode": "AADToken", "publicNetworkAccess": "Enabled"}},
    )
    fake.put_resource(
        f"{AOAI_ID}/deployments/gpt-35-turbo",
        {"properties": {"model": {"format": "OpenAI", "name": "gpt-35-turbo", "version": "0125"}}},
    )
    return fake


def test_healthy_environment_passes(
    healthy: FakeAzure,
    dev_config: EnvironmentConfig,
    dev_ctx: AzureContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = aoai_config(dev_config)
    assert report(cfg, dev_ctx) == 0
    out = capsys.readouterr().out
    assert "BLOCKER" not in out and "doctor: dev is ready" in out
    findings = doctor.run(cfg, dev_ctx)
    by_check: dict[str, list[doctor.Finding]] = {}
    for f in findings:
        by_check.setdefault(f.check, []).append(f)
    assert len(by_check["providers"]) == 8
    assert {f.status for f in by_check["network"]} == {"ok"}
    assert len(by_check["network"]) == 5  # acr, vault, blob, workspace, the managed endpoint
    [quota] = by_check["quota"]
    assert quota.detail == "24 free of 24, releases need 10"  # ceil(4 vCPU * 1 * 2 * 1.2)
    [aoai] = by_check["aoai"]
    assert aoai.status == "ok" and "gpt-35-turbo" in aoai.subject

    # what went over the wire: the caller's own assignments, by the official clients
    lists = healthy.find("GET", r"/providers/Microsoft.Authorization/roleAssignments$")
    assert lists and all(c.query["$filter"] == f"assignedTo('{CALLER}')" for c in lists)
    assert {
        c.path.split("/providers/")[-1]
        for c in healthy.find("GET", r"^/subscriptions/[^/]+/providers/[^/]+$")
    } == set(doctor.PROVIDERS)
    assert all(c.method == "GET" for c in healthy.calls)  # doctor only reads


def test_each_blocker_is_reported_with_its_fix(
    fake: FakeAzure, dev_config: EnvironmentConfig, dev_ctx: AzureContext, capsys: pytest.CaptureFixture[str]
) -> None:
    register_providers(fake, not_registered=("Microsoft.Web",))
    scopes = doctor._scopes(dev_config)
    assign(fake, scopes["subscription"], "Contributor", 1)  # no RBAC writer role
    ml_location(fake, limit=24, used=20)  # 4 free, 10 needed
    data_planes(fake)
    acr = f"{naming.container_registry(dev_config)}.azurecr.io"
    vault = f"{naming.key_vault(dev_config)}.vault.azure.net"
    fake.topology = Topology(private_hosts={acr: "acr"}, unresolvable={vault})
    cfg = aoai_config(dev_config)  # the account exists, the deployment gpt-35-turbo does not

    assert report(cfg, dev_ctx) == 1
    out = capsys.readouterr().out
    blockers = [line for line in out.splitlines() if line.startswith("BLOCKER")]
    assert len(blockers) == 6, out
    assert "az provider register --namespace Microsoft.Web" in out
    assert f"--role 'User Access Administrator' --scope /subscriptions/{SUB}" in out
    assert f"container registry (https://{acr}/v2/): HTTP 403 from a network rule" in out
    assert f"key vault (https://{vault}/secrets): DNS: the host does not resolve" in out
    assert "4 free of 24, releases need 10" in out
    assert "deployment gpt-35-turbo: no such deployment in gaops-aoai" in out
    assert "doctor: 6 blocker(s) in dev" in out


def test_private_endpoint_is_refused_outside_and_reachable_inside_the_vnet(
    healthy: FakeAzure, dev_config: EnvironmentConfig, dev_ctx: AzureContext
) -> None:
    host = "gaops-dev-web-classification.westeurope.inference.ml.azure.com"
    healthy.topology = Topology(private_hosts={host: "endpoint"})
    [endpoint] = [f for f in doctor.check_network(dev_config, dev_ctx) if "endpoint" in f.subject]
    assert endpoint.status == "blocker" and "network rule" in endpoint.detail
    healthy.topology = Topology(private_hosts={host: "endpoint"}, caller_in_vnet=True)
    [endpoint] = [f for f in doctor.check_network(dev_config, dev_ctx) if "endpoint" in f.subject]
    assert endpoint.status == "ok" and endpoint.detail == "reachable (HTTP 401)"


def test_private_workspace_is_probed_on_its_own_host(
    healthy: FakeAzure, dev_config: EnvironmentConfig, dev_ctx: AzureContext
) -> None:
    guid = "9d3f5c1e-2b4a-4c6d-8e0f-1a2b3c4d5e6f"
    healthy.store[WS_PATH.lower()]["properties"].update(workspaceId=guid, publicNetworkAccess="Disabled")
    host = f"{guid}.workspace.westeurope.api.azureml.ms"
    healthy.topology = Topology(private_hosts={host: "workspace"})
    [workspace] = [f for f in doctor.check_network(dev_config, dev_ctx) if f.subject.startswith("workspace")]
    assert workspace.subject == f"workspace (https://{host}/)"
    assert workspace.status == "blocker" and "network rule" in workspace.detail


def test_missing_resource_id_is_a_warning_not_a_pass(
    healthy: FakeAzure, dev_config: EnvironmentConfig, dev_ctx: AzureContext
) -> None:
    [aoai] = dev_config.connections
    cfg = dev_config.model_copy(update={"connections": [aoai.model_copy(update={"resource_id": None})]})
    [finding] = doctor.check_aoai(cfg, dev_ctx)
    assert finding.status == "warn"
    assert finding.fix == "set connections[0].resource_id to the Azure OpenAI account's ARM id"


def deployable_environ() -> dict[str, str]:
    """A real-looking value for every ${VAR} config/dev.yaml reads (no placeholder, no example
    mode), so the command gets past config loading to the credential check."""
    import re

    text = (REPO / "config" / "dev.yaml").read_text()
    values: dict[str, str] = {}
    for name in sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))):
        if name.endswith("RESOURCE_ID"):
            values[name] = (
                f"/subscriptions/{SUB}/resourceGroups/ai-rg/providers/Microsoft.CognitiveServices/accounts/gaops-aoai"
            )
        elif name.endswith("CLUSTER_ID"):
            values[name] = (
                f"/subscriptions/{SUB}/resourceGroups/aks-rg/providers/Microsoft.ContainerService/managedClusters/aks1"
            )
        elif name.endswith(("_ID", "OBJECT_ID")):
            values[name] = "5b2f7c4e-8a1d-4e3f-9c6b-0d1e2f3a4b5c"
        elif name.endswith("ENDPOINT"):
            values[name] = "https://gaops-dev-aoai.openai.azure.com/"
        elif name.endswith("SSH_PUBLIC_KEY"):
            values[name] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdvb2RrZXlnb29ka2V5Z29vZGtleWdvb2RrZXk ci"
        elif name.endswith("DEPLOYMENT"):
            values[name] = "gpt-35-turbo"
        else:
            values[name] = "gaopsit" if "ACCOUNT" in name or "PREFIX" in name else "gaops-it-rg"
    return {**values, **ENVIRON}


def test_without_credentials_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),  # no az login cache, no azd, no VS Code account
        "AZURE_CONFIG_DIR": str(tmp_path / "az"),
        **deployable_environ(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "release", "doctor", "--env", "dev"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genaiops: error: no Azure credentials")
    assert result.stdout == ""
