"""``genaiops doctor``: a preflight for first contact with a real subscription.

Checks, from where it runs, with the caller's own Azure identity (read-only requests only):

- **roles**: the caller's role assignments (Microsoft.Authorization ``roleAssignments`` list,
  inherited ones included) at each scope a plan/apply and a release need;
- **network**: one bounded HTTPS request to each data plane (ACR ``/v2/``, Key Vault, blob,
  workspace discovery, online endpoint scoring URIs); any HTTP answer but a network-rule 403 means
  reachable; a DNS failure, a timeout or a network-rule 403 is a blocker;
- **providers**: each resource provider the stacks use is ``Registered`` in the subscription;
- **quota**: Azure ML dedicated vCPU quota of each managed deployment's VM family
  (``locations/{location}/usages``) covers two deployments side by side plus the 20 % Azure ML
  reserves for upgrades (https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas);
- **aoai**: each Azure OpenAI deployment the flows use exists in the connection's account
  (``resource_id`` of the connection; ARM ``accounts/deployments``).

:func:`run` returns :class:`Finding` s; the CLI prints them and exits 1 on any blocker.
Every request goes through the official SDK clients built by :class:`AzureContext` (so a test
passes a transport and sees the HTTP requests).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import Pipeline
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from infra import naming
from infra.roles import PRIVILEGED, ROLES
from release.azure.clients import ARM_SCOPE, AzureContext
from release.config import EnvironmentConfig, ManagedTarget
from release.errors import UserError

Status = Literal["ok", "warn", "blocker"]

PROVIDERS = (
    "Microsoft.MachineLearningServices",
    "Microsoft.ContainerRegistry",
    "Microsoft.KeyVault",
    "Microsoft.Storage",
    "Microsoft.Web",
    "Microsoft.OperationalInsights",
    "Microsoft.Insights",
    "Microsoft.Network",
)
PROBE_TIMEOUT_S = 10.0  # connect and read timeout of each reachability request
ML_API = "2024-04-01"
COGNITIVE_API = "2023-05-01"
QUOTA_HEADROOM = 1.2  # Azure ML reserves 20 % extra for upgrades (how-to-manage-quotas)
PARALLEL_DEPLOYMENTS = 2  # blue/green and canary keep the old and the new deployment side by side

# network-rule answers, per service (documented error codes)
_NETWORK_403 = (
    "AuthorizationFailure",  # Storage firewall
    "ForbiddenByConnection",  # Key Vault public access disabled / not via private link
    "ForbiddenByFirewall",  # Key Vault firewall
    "is not allowed access",  # ACR firewall (https://aka.ms/acr/firewall)
    "Public access",  # Azure ML workspace / endpoint with public network access disabled
    "Ip Forbidden",  # App Service access restrictions
)
_DNS_FAILURE = (
    "Failed to resolve",
    "Name or service not known",
    "nodename nor servname",
    "getaddrinfo failed",
)


class NoCredentials(UserError):
    """No Azure identity could be obtained: doctor has nothing to check (exit 2)."""


@dataclass(frozen=True)
class Finding:
    check: str  # "roles" | "network" | "providers" | "quota" | "aoai"
    subject: str  # what was checked, e.g. "AcrPush on /subscriptions/.../registries/x"
    status: Status
    detail: str  # what was seen
    fix: str = ""  # what to do (empty when ok)

    def line(self) -> str:
        mark = {"ok": "ok     ", "warn": "warn   ", "blocker": "BLOCKER"}[self.status]
        text = f"{mark} {self.check:<9} {self.subject}: {self.detail}"
        return f"{text}\n          fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class RoleNeed:
    scope: str
    why: str
    any_of: tuple[str, ...]  # role names; a privileged one (Owner, Contributor) also satisfies


def run(cfg: EnvironmentConfig, ctx: AzureContext, project_dir: Path | None = None) -> list[Finding]:
    """Every check; raises :class:`NoCredentials` when no token can be obtained."""
    principal = caller_object_id(ctx)
    findings: list[Finding] = []
    findings += check_providers(ctx)
    findings += check_roles(cfg, ctx, principal)
    findings += check_network(cfg, ctx)
    findings += check_quota(cfg, ctx)
    findings += check_aoai(cfg, ctx, project_dir)
    return findings


# -- identity ---------------------------------------------------------------------------------
def caller_object_id(ctx: AzureContext) -> str:
    """The caller's Entra object id (``oid`` claim of its ARM token)."""
    try:
        token = ctx.token(ARM_SCOPE)
    except ClientAuthenticationError as exc:
        raise NoCredentials(
            "no Azure credentials: doctor checks a real subscription; run `az login`, or set "
            "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE as the pipelines do"
        ) from exc
    payload = token.split(".")[1] if token.count(".") == 2 else ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        claims = {}
    oid = claims.get("oid")
    if not oid:
        raise UserError(
            "the Azure token has no 'oid' claim: doctor needs a user or service principal identity"
        )
    return str(oid)


# -- resource providers --------------------------------------------------------------------------
def _resources(ctx: AzureContext) -> Any:
    from azure.mgmt.resource.resources import ResourceManagementClient

    return ResourceManagementClient(ctx.credential, ctx.subscription_id, **ctx.sdk_kwargs())


def check_providers(ctx: AzureContext) -> list[Finding]:
    client = _resources(ctx)
    out = []
    for namespace in PROVIDERS:
        try:
            state = client.providers.get(namespace).registration_state or "Unknown"
        except HttpResponseError as exc:
            state = f"unreadable (HTTP {exc.status_code})"
        if state == "Registered":
            out.append(Finding("providers", namespace, "ok", "Registered"))
        else:
            out.append(
                Finding(
                    "providers",
                    namespace,
                    "blocker",
                    state,
                    f"az provider register --namespace {namespace} --subscription {ctx.subscription_id}",
                )
            )
    return out


# -- roles -----------------------------------------------------------------------------------
def _scopes(cfg: EnvironmentConfig) -> dict[str, str]:
    sub = f"/subscriptions/{cfg.azure.subscription_id}" if cfg.azure else ""
    rg = f"{sub}/resourceGroups/{cfg.resource_group_name}"
    p = f"{rg}/providers"
    return {
        "subscription": sub,
        "resource group": rg,
        "workspace": f"{p}/Microsoft.MachineLearningServices/workspaces/{naming.ml_workspace(cfg)}",
        "registry": f"{p}/Microsoft.ContainerRegistry/registries/{naming.container_registry(cfg)}",
        "log analytics": f"{p}/Microsoft.OperationalInsights/workspaces/{naming.log_analytics(cfg)}",
    }


def role_needs(cfg: EnvironmentConfig) -> list[RoleNeed]:
    """What the caller (deployer / pipeline identity) needs, per scope (docs/doctor-and-integration.md)."""
    assert cfg.azure is not None
    s = _scopes(cfg)
    infra_scope = s["subscription"] if cfg.azure.resource_group.create else s["resource group"]
    where = (
        "subscription (resource_group.create: true)" if cfg.azure.resource_group.create else "resource group"
    )
    return [
        RoleNeed(infra_scope, f"terraform apply creates the resources ({where})", ("Contributor",)),
        RoleNeed(
            infra_scope,
            "terraform apply writes the role assignments of the stack",
            ("User Access Administrator", "Role Based Access Control Administrator"),
        ),
        RoleNeed(s["workspace"], "release: endpoints, deployments, models", ("AzureML Data Scientist",)),
        RoleNeed(s["registry"], "release: push flow images", ("AcrPush",)),
        RoleNeed(s["log analytics"], "release: canary telemetry", ("Log Analytics Reader",)),
    ]


def _role_id(name: str) -> str:
    return PRIVILEGED.get(name) or ROLES[name].definition_id


def check_roles(cfg: EnvironmentConfig, ctx: AzureContext, principal: str) -> list[Finding]:
    from azure.mgmt.authorization import AuthorizationManagementClient

    client = AuthorizationManagementClient(ctx.credential, ctx.subscription_id, **ctx.sdk_kwargs())
    out = []
    cache: dict[str, set[str]] = {}
    for need in role_needs(cfg):
        if need.scope not in cache:
            try:
                assignments = client.role_assignments.list_for_scope(
                    need.scope, filter=f"assignedTo('{principal}')"
                )
                cache[need.scope] = {
                    str(a.role_definition_id).rsplit("/", 1)[-1].lower()
                    for a in assignments
                    if need.scope.lower().startswith(str(a.scope).lower().rstrip("/"))
                }
            except ResourceNotFoundError:
                cache[need.scope] = _inherited(client, need.scope, principal)
            except HttpResponseError as exc:
                out.append(
                    Finding(
                        "roles",
                        need.scope,
                        "blocker",
                        f"cannot list role assignments (HTTP {exc.status_code})",
                        "grant the caller 'Reader' on the scope so it can read its own roles",
                    )
                )
                cache[need.scope] = set()
                continue
        held = cache[need.scope]
        names = [*need.any_of, "Owner"]
        if "Administrator" not in need.any_of[0]:  # Contributor covers every non-RBAC action
            names.append("Contributor")
        accepted = {_role_id(n).lower(): n for n in names}
        match = [accepted[r] for r in held if r in accepted]
        subject = f"{' or '.join(need.any_of)} on {need.scope}"
        if match:
            out.append(Finding("roles", subject, "ok", f"holds {sorted(match)[0]} ({need.why})"))
        else:
            out.append(
                Finding(
                    "roles",
                    subject,
                    "blocker",
                    f"missing ({need.why})",
                    f"az role assignment create --assignee-object-id {principal} "
                    f"--role '{need.any_of[0]}' --scope {need.scope}",
                )
            )
    return out


def _inherited(client: Any, scope: str, principal: str) -> set[str]:
    """The resource does not exist yet: what the caller holds at its nearest existing parent."""
    parent = scope.rsplit("/providers/", 1)[0] if "/providers/" in scope else scope.rsplit("/", 2)[0]
    if not parent or parent == scope:
        return set()
    try:
        return {
            str(a.role_definition_id).rsplit("/", 1)[-1].lower()
            for a in client.role_assignments.list_for_scope(parent, filter=f"assignedTo('{principal}')")
            if parent.lower().startswith(str(a.scope).lower().rstrip("/"))
        }
    except ResourceNotFoundError:
        return _inherited(client, parent, principal)


# -- network reachability -----------------------------------------------------------------------
def data_planes(cfg: EnvironmentConfig, ctx: AzureContext) -> list[tuple[str, str]]:
    """(what, URL) of each data plane the pipeline and the release talk to."""
    assert cfg.azure is not None
    ml = _resources(ctx)
    ws = _scopes(cfg)["workspace"]
    planes = [
        ("container registry", f"https://{naming.container_registry(cfg)}.azurecr.io/v2/"),
        ("key vault", f"https://{naming.key_vault(cfg)}.vault.azure.net/secrets?api-version=7.4"),
        ("blob storage", f"https://{naming.storage_account(cfg)}.blob.core.windows.net/?comp=list"),
        ("workspace", _workspace_url(cfg, ml, ws)),
    ]
    for flow, settings in cfg.flows.items():
        if settings.deployment.target not in ("managed", "kubernetes"):
            continue
        url = (
            f"https://management.azure.com{ws}/onlineEndpoints/{cfg.endpoint_name(flow)}?api-version={ML_API}"
        )
        response = ml.send_request(HttpRequest("GET", url))
        if response.status_code == 200:
            scoring = (response.json().get("properties") or {}).get("scoringUri")
            if scoring:
                planes.append((f"endpoint {cfg.endpoint_name(flow)}", scoring))
    return planes


def _workspace_url(cfg: EnvironmentConfig, ml: Any, workspace_id: str) -> str:
    """The workspace's own data-plane host (``<workspaceId>.workspace.<region>.api.azureml.ms``,
    which its private endpoint serves) once it exists; the regional discovery URL before."""
    assert cfg.azure is not None
    url = f"https://management.azure.com{workspace_id}?api-version={ML_API}"
    response = ml.send_request(HttpRequest("GET", url))
    guid = (
        (response.json().get("properties") or {}).get("workspaceId") if response.status_code == 200 else None
    )
    if guid:
        return f"https://{guid}.workspace.{cfg.azure.location}.api.azureml.ms/"
    return f"https://{cfg.azure.location}.api.azureml.ms/discovery"


def probe(ctx: AzureContext, url: str) -> tuple[Status, str]:
    """One bounded, unauthenticated HTTPS GET: is the data plane reachable from here?"""
    transport = ctx.transport or RequestsTransport()
    pipeline: Pipeline[Any, Any] = Pipeline(transport=transport, policies=[])
    try:
        response = pipeline.run(
            HttpRequest("GET", url), connection_timeout=PROBE_TIMEOUT_S, read_timeout=PROBE_TIMEOUT_S
        ).http_response
        response.read()
    except (ServiceRequestError, ServiceResponseError, AzureError) as exc:
        text = str(exc)
        if any(marker in text for marker in _DNS_FAILURE):
            return (
                "blocker",
                "DNS: the host does not resolve from here (private DNS zone linked to this network?)",
            )
        return "blocker", f"no answer within {PROBE_TIMEOUT_S:.0f} s ({text.splitlines()[0][:120]})"
    body = response.text() if response.status_code == 403 else ""
    headers = " ".join(f"{k}={v}" for k, v in response.headers.items())
    if response.status_code == 403 and any(m in body or m in headers for m in _NETWORK_403):
        return "blocker", "HTTP 403 from a network rule (public access disabled or this IP not allowed)"
    return "ok", f"reachable (HTTP {response.status_code})"


def check_network(cfg: EnvironmentConfig, ctx: AzureContext) -> list[Finding]:
    out = []
    for what, url in data_planes(cfg, ctx):
        status, detail = probe(ctx, url)
        fix = (
            "run from an agent inside the environment's VNet (network: private), or allow this "
            "network on the resource (docs/doctor-and-integration.md)"
            if status == "blocker"
            else ""
        )
        out.append(Finding("network", f"{what} ({url.split('?')[0]})", status, detail, fix))
    return out


# -- quota -----------------------------------------------------------------------------------------
def _list(ctx: AzureContext, url: str) -> list[dict[str, Any]]:
    response = _resources(ctx).send_request(HttpRequest("GET", url))
    response.raise_for_status()
    return list(response.json().get("value") or [])


def check_quota(cfg: EnvironmentConfig, ctx: AzureContext) -> list[Finding]:
    assert cfg.azure is not None
    managed = {f: s.deployment for f, s in cfg.flows.items() if isinstance(s.deployment, ManagedTarget)}
    if not managed:
        return []
    base = (
        f"https://management.azure.com/subscriptions/{ctx.subscription_id}/providers/"
        f"Microsoft.MachineLearningServices/locations/{cfg.azure.location}"
    )
    try:
        sizes = {s["name"].lower(): s for s in _list(ctx, f"{base}/vmSizes?api-version={ML_API}")}
        usages = {u["name"]["value"].lower(): u for u in _list(ctx, f"{base}/usages?api-version={ML_API}")}
    except HttpResponseError as exc:
        return [Finding("quota", cfg.azure.location, "warn", f"cannot read usages (HTTP {exc.status_code})")]
    need: dict[str, int] = {}
    for flow, target in managed.items():
        size = sizes.get(target.instance_type.lower())
        if size is None:
            return [
                Finding(
                    "quota",
                    f"{flow}: {target.instance_type}",
                    "blocker",
                    f"VM size not offered by Azure ML in {cfg.azure.location}",
                    f"set flows.{flow}.deployment.instance_type to a size listed by "
                    f"`az ml compute list-sizes --location {cfg.azure.location}`",
                )
            ]
        family = str(size["family"])
        cores = math.ceil(int(size["vCPUs"]) * target.instance_count * PARALLEL_DEPLOYMENTS * QUOTA_HEADROOM)
        need[family] = need.get(family, 0) + cores
    out = []
    for family, cores in sorted(need.items()):
        usage = usages.get(family.lower())
        if usage is None:
            out.append(Finding("quota", family, "warn", "no usage entry for this VM family"))
            continue
        free = int(usage["limit"]) - int(usage["currentValue"])
        subject = f"{family} vCPUs in {cfg.azure.location}"
        detail = f"{free} free of {usage['limit']}, releases need {cores}"
        if free >= cores:
            out.append(Finding("quota", subject, "ok", detail))
        else:
            out.append(
                Finding(
                    "quota",
                    subject,
                    "blocker",
                    detail,
                    "request more Azure ML dedicated vCPU quota for this family (portal: Azure ML > Quota), "
                    "or choose a smaller instance_type / instance_count",
                )
            )
    return out


# -- Azure OpenAI deployments ---------------------------------------------------------------------
def aoai_deployments(cfg: EnvironmentConfig, project_dir: Path | None) -> dict[str, set[str]]:
    """Connection name -> Azure OpenAI deployment names the flows use in this environment (the
    experiment overlay's ``connection_overrides`` and ``hyperparameters.deployment_name``)."""
    from release.config import REPO_ROOT
    from release.experiment.spec import load_experiment

    root = project_dir or REPO_ROOT
    out: dict[str, set[str]] = {}
    for settings in cfg.flows.values():
        path = root / settings.path / getattr(settings, "experiment", "experiment.yaml")
        if not path.is_file():
            continue
        experiment = load_experiment(path, cfg.environment)
        names = {str(n) for n in experiment.hyperparameters.get("deployment_name", [])}
        for connection in set(experiment.connection_overrides.values()):
            out.setdefault(connection, set()).update(names)
    return out


def check_aoai(cfg: EnvironmentConfig, ctx: AzureContext, project_dir: Path | None = None) -> list[Finding]:
    wanted = aoai_deployments(cfg, project_dir)
    client = _resources(ctx)
    out = []
    for i, connection in enumerate(cfg.connections):
        if connection.category != "AzureOpenAI":
            continue
        # the connection's declared model deployments (when the config has them) and the flows' own
        declared = {str(n) for n in getattr(connection, "model_deployments", None) or []}
        names = sorted(wanted.get(connection.name, set()) | declared)
        if not connection.resource_id:
            out.append(
                Finding(
                    "aoai",
                    f"connection {connection.name}",
                    "warn",
                    "no resource_id: cannot check its model deployments",
                    f"set connections[{i}].resource_id to the Azure OpenAI account's ARM id",
                )
            )
            continue
        for name in names:
            url = f"https://management.azure.com{connection.resource_id}/deployments/{name}?api-version={COGNITIVE_API}"
            response = client.send_request(HttpRequest("GET", url))
            subject = f"connection {connection.name}: deployment {name}"
            if response.status_code == 200:
                model = ((response.json().get("properties") or {}).get("model") or {}).get("name", "?")
                out.append(Finding("aoai", subject, "ok", f"exists (model {model})"))
            elif response.status_code == 404:
                out.append(
                    Finding(
                        "aoai",
                        subject,
                        "blocker",
                        f"no such deployment in {connection.resource_id.rsplit('/', 1)[-1]}",
                        "create it (az cognitiveservices account deployment create) or set "
                        "hyperparameters.deployment_name in the flow's experiment.<env>.yaml",
                    )
                )
            else:
                out.append(Finding("aoai", subject, "warn", f"cannot read it (HTTP {response.status_code})"))
    return out


def blockers(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "blocker"]
