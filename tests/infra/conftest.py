"""Session fixtures for the infra tests: synthesize once per session (CDKTF imports ~10 s).

``stacks``      every environment stack (dev, prod and two test variants) synthesized in ONE
                process into a temp cdktf.out, with a canary connection key in the environment.
``bare``        each construct alone in a bare stack, synthesized once.
``config_dir``  a temp config dir: copies of dev/prod plus the variants (insecure, variant).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from release.config import CONFIG_DIR, load_config

CANARY = "canary-key-7f3a9c1e-DO-NOT-LEAK"
DEPLOYER = "11111111-1111-1111-1111-111111111111"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
BATCH = "55555555-5555-5555-5555-555555555555"
WEB = "66666666-6666-6666-6666-666666666666"
EP = "33333333-3333-3333-3333-333333333333"
READER = "44444444-4444-4444-4444-444444444444"
COMPUTE = "77777777-7777-7777-7777-777777777777"
PROMOTER = "88888888-8888-8888-8888-888888888888"
AKS = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/aks-rg/providers/"
    "Microsoft.ContainerService/managedClusters/aks1"
)


def _raw(env: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / f"{env}.yaml").read_text())


def private_raw() -> dict[str, Any]:
    """dev (managed endpoint + App Service) under the private profile: managed network with
    approved outbound only, so outbound rules are generated; App Service with VNet integration."""
    raw = _raw("dev")
    raw["environment"] = "private"
    raw["network"] = {
        "profile": "private",
        "agent_pool": {"name": "genaiops-private-agents", "ssh_public_key": "${AGENT_SSH_PUBLIC_KEY}"},
        "egress_fqdns": ["www.python.org"],
    }
    raw["workspace"]["managed_network"] = {"isolation": "allow_only_approved_outbound"}
    raw["connections"].append(
        {"name": "openai", "category": "OpenAI", "target": "https://api.openai.com/v1", "auth_type": "AAD"}
    )
    return raw


def insecure_raw() -> dict[str, Any]:
    raw = private_raw()
    raw["environment"] = "insecure"
    raw["key_vault"]["public_network_access"] = True
    raw["registry"]["admin_enabled"] = True
    raw["flows"]["web_classification"]["deployment"]["auth_mode"] = "key"
    return raw


def variant_raw() -> dict[str, Any]:
    """prod (Kubernetes) under the public profile with HTTPS on the extension, plus: an
    access-policy vault, an existing resource group, AAD + Key Vault connections, the legacy AKS
    attach for a second compute, a differently sized batch cluster, readers, an IP allow list."""
    raw = _raw("prod")
    raw["environment"] = "variant"
    raw["network"] = {"profile": "public", "allowed_ips": ["203.0.113.0/24", "198.51.100.7"]}
    raw["azure"]["resource_group"] = {"name": "existing-rg", "create": False}
    raw["key_vault"]["authorization"] = "access_policies"
    raw["workspace"].update(batch_compute="batch-2", batch_vm_size="Standard_D4s_v3", batch_max_nodes=2)
    raw["identities"]["readers"] = ["22222222-2222-2222-2222-222222222222"]
    raw["connections"] += [
        {
            "name": "search",
            "category": "CognitiveSearch",
            "target": "https://s.search.windows.net",
            "auth_type": "ApiKey",
            "secret": {"key_vault_secret": "search-key"},
        },
        {
            "name": "aoai_aad",
            "category": "AzureOpenAI",
            "target": "https://x.openai.azure.com/",
            "auth_type": "AAD",
            "api_type": "azure",
            "api_version": "2024-02-01",
        },
    ]
    for deployment in (raw["flows"][f]["deployment"] for f in raw["flows"]):
        deployment.update(ssl_cname="flows.example.com", ssl_secret="azureml-tls")
    raw["flows"]["support_triage"]["deployment"] = {
        "target": "kubernetes",
        "aks_cluster_id": AKS,
        "compute_name": "aks-legacy",
        "legacy_inference_cluster": True,
        "auth_mode": "aml_token",
        "ssl_cname": "flows.example.com",
        "ssl_secret": "azureml-tls",
    }
    return raw


VARIANTS = {"private": private_raw, "insecure": insecure_raw, "variant": variant_raw}
STACKS = ("dev", "prod", "private", "variant", "insecure")


@pytest.fixture(scope="session")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("config")
    for env in ("dev", "prod", "local"):
        (directory / f"{env}.yaml").write_text((CONFIG_DIR / f"{env}.yaml").read_text())
    for name, make in VARIANTS.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(make()))
    return directory


@dataclass
class Synthesized:
    out: Path
    json: dict[str, dict[str, Any]]


def resources(doc: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return list(doc.get("resource", {}).get(rtype, {}).values())


def _add_subscription_contributor(stack: Any) -> None:
    """TEST ONLY: the one thing the stacks refuse to build, to prove the gate catches it."""
    if stack.config.environment != "insecure":
        return
    from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment

    RoleAssignment(
        stack,
        "test_only_subscription_contributor",
        scope=f"/subscriptions/{SUBSCRIPTION}",
        role_definition_name="Contributor",
        principal_id=DEPLOYER,
    )


@pytest.fixture(scope="session")
def stacks(config_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    from infra.app import synth

    out = tmp_path_factory.mktemp("cdktf.out")
    saved = os.environ.get("AOAI_API_KEY")
    os.environ["AOAI_API_KEY"] = CANARY
    try:
        configs = [load_config(e, config_dir, example=True) for e in STACKS]
        paths = synth(configs, out, customize=_add_subscription_contributor)
    finally:
        if saved is None:
            os.environ.pop("AOAI_API_KEY", None)
        else:
            os.environ["AOAI_API_KEY"] = saved
    yield Synthesized(out, {env: json.loads(p.read_text()) for env, p in paths.items()})


@pytest.fixture(scope="session")
def bare(config_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each construct in its own bare stack, all synthesized by one App."""
    import cdktf
    from cdktf_cdktf_provider_azurerm.provider import AzurermProvider

    from infra.azapi import AzapiProvider
    from infra.components.access import Access, Principal, Scopes
    from infra.components.app_service import WebApp
    from infra.components.batch_compute import BatchCompute
    from infra.components.connections import Connections
    from infra.components.endpoints import OnlineEndpoint
    from infra.components.key_vault_access import KeyVaultAccess
    from infra.components.kubernetes import KubernetesCompute
    from infra.components.workspace import Workspace
    from infra.stacks.environment import provider_features
    from infra.time_sleep import TimeProvider, TimeSleep
    from release.config import AppServiceTarget, KubernetesTarget

    out = tmp_path_factory.mktemp("bare")
    app = cdktf.App(outdir=str(out), stack_traces=False)
    dev = load_config("dev", CONFIG_DIR, example=True)

    def stack(name: str) -> tuple[cdktf.TerraformStack, AzapiProvider]:
        s = cdktf.TerraformStack(app, name)
        AzurermProvider(s, "azurerm", features=[provider_features()])
        return s, AzapiProvider(s, "azapi")

    s, _ = stack("time")
    TimeSleep(s, "wait", provider=TimeProvider(s, "time"), create_duration="120s", triggers={"p": "x"})

    s, _ = stack("workspace")
    Workspace(s, "ws", dev)

    s, _ = stack("access")
    Access(
        s,
        "access",
        subscription_id=SUBSCRIPTION,
        scopes=Scopes(
            workspace_id="/ws/id",
            registry_id="/acr/id",
            storage_id="/st/id",
            app_insights_id="/appi/id",
            log_analytics_id="/log/id",
        ),
        deployer=Principal("deployer", DEPLOYER),
        endpoints=[Principal("ep", EP, managed_identity=True)],
        web=[Principal("web", WEB, managed_identity=True)],
        computes=[Principal("aks", COMPUTE, managed_identity=True)],
        readers=[Principal("reader", READER, "Group")],
        web_apps=[("app", "/app/id")],
        batch=[Principal("batch", BATCH, managed_identity=True)],
        promoters=[Principal("promoter", PROMOTER)],
    )
    for mode in ("rbac", "access_policies"):
        s, _ = stack(f"kv_{mode}")
        KeyVaultAccess(
            s,
            "kv",
            subscription_id=SUBSCRIPTION,
            tenant_id=SUBSCRIPTION,
            key_vault_id="/kv/id",
            authorization=mode,  # type: ignore[arg-type]
            readers=[Principal("web", WEB, managed_identity=True)],
        )

    variant = load_config("variant", config_dir, example=True)
    for name, version in (("connections", 1), ("connections_rotated", 2)):  # key rotation
        s, azapi = stack(name)
        Connections(
            s,
            "conn",
            provider=azapi,
            workspace_id="/ws/id",
            key_vault_id="/kv/id",
            connections=[c.model_copy(update={"key_version": version}) for c in variant.connections],
        )

    s, azapi = stack("endpoint")
    for auth, require in (("aad_token", True), ("key", False)):
        OnlineEndpoint(
            s,
            f"ep_{auth}",
            provider=azapi,
            name=f"ep-{auth.replace('_', '-')}",
            workspace_id="/ws/id",
            location="westeurope",
            auth_mode=auth,  # type: ignore[arg-type]
            require_aad=require,
            public_network_access=False,
        )

    for legacy in (False, True):
        s, azapi = stack(f"kubernetes_{'legacy' if legacy else 'extension'}")
        KubernetesCompute(
            s,
            "k8s",
            provider=azapi,
            workspace_id="/ws/id",
            location="westeurope",
            target=KubernetesTarget(
                target="kubernetes",
                aks_cluster_id=AKS,
                legacy_inference_cluster=legacy,
                ssl_cname=None if legacy else "flows.example.com",
                ssl_secret=None if legacy else "azureml-tls",
            ),
        )

    s, _ = stack("webapp")
    WebApp(
        s,
        "web",
        target=AppServiceTarget(target="appservice", health_check_path="/health"),
        app_name="app1",
        plan_name="plan1",
        resource_group_name="rg",
        location="westeurope",
        registry_login_server="acr1.azurecr.io",
        app_insights_reference="@Microsoft.KeyVault(SecretUri=https://kv1.vault.azure.net/secrets/appi)",
        subnet_id="/snet/app",
    )

    for managed_network in (True, False):
        s, _ = stack(f"batch_{'managed' if managed_network else 'open'}")
        BatchCompute(
            s,
            "batch",
            name="cpu-cluster",
            workspace_id="/ws/id",
            location="westeurope",
            vm_size="Standard_DS3_v2",
            max_nodes=4,
            managed_network=managed_network,
        )

    app.synth()
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "stacks").glob("*/cdk.tf.json")}
