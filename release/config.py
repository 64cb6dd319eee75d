"""The one typed environment configuration, read by both ``infra/`` and ``release/``.

``config/<env>.yaml`` is loaded with :func:`load_config`. ``${VAR}`` and ``${VAR:-default}``
references are resolved from the environment first; then the document is validated by the
pydantic models below. Unknown keys are errors, and every error names the file, the field
path and what is allowed, for example::

    config/dev.yaml: flows.web_classification.release.steps[2]: 140 is not between 0 and 100

Secrets are never values in this file: a connection names where its key lives
(``secret: {env: VAR}`` or ``secret: {key_vault_secret: NAME}``).

Example mode (``GENAIOPS_EXAMPLE=1``, or ``load_config(..., example=True)``): a ``${VAR}`` that is
not set takes its documented value from :data:`EXAMPLE_VALUES` instead of being an error, so
tests and examples can synthesize offline. A config loaded that way (or one whose values are
known placeholders, such as the all-zero GUID) is refused by :func:`require_deployable`, which
every command that talks to Azure calls first (plan, apply, release, promote, doctor).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from release.errors import UserError
from release.project import project_root
from release.yamlfile import read_mapping

# the user's project (config/ and flows/), found like git finds its repository: release/project.py
REPO_ROOT = project_root()
CONFIG_DIR = REPO_ROOT / "config"
ENVIRONMENTS = ("local", "dev", "prod")

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{1,11}$")
_CONNECTION_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

EXAMPLE_ENV = "GENAIOPS_EXAMPLE"
_EXAMPLE_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
# The documented example value of every variable config/dev.yaml and config/prod.yaml read
# (docs/config.md "Example mode"). Used ONLY in example mode, for variables that are not set.
EXAMPLE_VALUES: dict[str, str] = {
    "AZURE_SUBSCRIPTION_ID": _EXAMPLE_SUBSCRIPTION,
    "AZURE_TENANT_ID": _EXAMPLE_SUBSCRIPTION,
    "GENAIOPS_NAME_PREFIX": "gaops",
    "TFSTATE_RESOURCE_GROUP": "gaops-tfstate-rg",
    "TFSTATE_STORAGE_ACCOUNT": "gaopstfstate",
    "DEPLOYER_OBJECT_ID": "11111111-1111-1111-1111-111111111111",
    "PROD_DEPLOYER_OBJECT_ID": "22222222-2222-2222-2222-222222222222",
    "AOAI_ENDPOINT": "https://gaops-example-aoai.openai.azure.com/",
    "AOAI_RESOURCE_ID": (
        f"/subscriptions/{_EXAMPLE_SUBSCRIPTION}/resourceGroups/gaops-aoai-rg/providers/"
        "Microsoft.CognitiveServices/accounts/gaops-example-aoai"
    ),
    "AOAI_DEPLOYMENT": "gpt-35-turbo",
    "AKS_CLUSTER_ID": (
        f"/subscriptions/{_EXAMPLE_SUBSCRIPTION}/resourceGroups/gaops-prod-aks-rg/providers/"
        "Microsoft.ContainerService/managedClusters/gaops-prod-aks"
    ),
    "AGENT_SSH_PUBLIC_KEY": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample genaiops-example"
    ),
}
# Values that are never real: a config holding one is refused by require_deployable.
PLACEHOLDER_GUIDS = frozenset(
    {"00000000-0000-0000-0000-000000000000", "11111111-1111-1111-1111-111111111111"}
)


class ConfigError(UserError):
    """A configuration file is invalid: the message names file, field and fix."""


# --------------------------------------------------------------------------- helpers


def _percent(value: int) -> int:
    if not 0 <= value <= 100:
        raise ValueError(f"{value} is not between 0 and 100")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is not between 0.0 and 1.0")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port (1-65535)")
    return value


def _guid(value: str) -> str:
    if not _GUID_RE.match(value):
        raise ValueError(f"{value!r} is not a GUID such as 00000000-0000-0000-0000-000000000000")
    return value


Percent = Annotated[int, AfterValidator(_percent)]
Fraction = Annotated[float, AfterValidator(_fraction)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
Port = Annotated[int, AfterValidator(_port)]
Guid = Annotated[str, AfterValidator(_guid)]


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- azure basics


class ResourceGroup(Strict):
    name: str | None = None  # default: <prefix>-<env>-rg
    create: bool = True


class AzureSettings(Strict):
    subscription_id: Guid
    tenant_id: Guid
    location: str = Field(min_length=2)
    name_prefix: str
    resource_group: ResourceGroup = ResourceGroup()
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} must be 2-12 lowercase letters or digits starting with a letter "
                "(it becomes part of storage-account and registry names)"
            )
        return value


class StateBackend(Strict):
    """The azurerm remote backend that holds this environment's Terraform state."""

    resource_group: str
    storage_account: str
    container: str = "tfstate"
    key: str
    use_azuread_auth: bool = True


class ManagedNetwork(Strict):
    isolation: Literal["disabled", "allow_internet_outbound", "allow_only_approved_outbound"] = (
        "allow_only_approved_outbound"
    )


class WorkspaceSettings(Strict):
    public_network_access: bool = False
    managed_network: ManagedNetwork = ManagedNetwork()
    high_business_impact: bool = False
    sku: Literal["Basic"] = "Basic"
    # infra (issue 4): online endpoints in this workspace must use Entra ID (AAD) tokens
    require_aad_auth: bool = True
    # infra (issue 4): Log Analytics retention for the workspace's logs and App Insights
    log_retention_days: Annotated[int, Field(ge=30, le=730)] = 90
    # release (issue 5): the compute cluster that runs experiments with --run-in workspace
    batch_compute: str = "cpu-cluster"
    # infra (issue 4 follow-up): size of that cluster; it scales to zero nodes when idle
    batch_vm_size: str = "Standard_DS3_v2"
    batch_max_nodes: Annotated[int, Field(ge=1, le=100)] = 4


class Identities(Strict):
    deployer_object_id: Guid
    deployer_principal_type: Literal["ServicePrincipal", "User", "Group"] = "ServicePrincipal"
    # Extra principals (e.g. a data-science group) that read experiment results.
    readers: list[Guid] = Field(default_factory=list)
    # Principals that copy released images out of this environment's registry: the deployer of
    # the next environment (`genaiops promote --env prod` pulls from dev's registry) gets AcrPull.
    promoters: list[Guid] = Field(default_factory=list)


class KeyVaultSettings(Strict):
    authorization: Literal["rbac", "access_policies"] = "rbac"
    purge_protection: bool = True
    soft_delete_retention_days: Annotated[int, Field(ge=7, le=90)] = 90
    public_network_access: bool = False


class RegistrySettings(Strict):
    sku: Literal["Basic", "Standard", "Premium"] = "Premium"
    public_network_access: bool = False  # default: follows network.profile (public -> true)
    admin_enabled: bool = False
    # Quarantine blocks every pull until a scanner marks the image Passed; the toolkit has no
    # scanner, so it stays off unless you bring one (infra/validate.py refuses it otherwise).
    quarantine: bool = False
    quarantine_scanner: str | None = (
        None  # who marks images Passed (e.g. "Microsoft Defender for Containers")
    )


# --------------------------------------------------------------------------- network


class Subnets(Strict):
    """Address ranges (CIDR) of the private profile's VNet subnets."""

    private_endpoints: str = "10.40.1.0/24"
    app_service: str = "10.40.2.0/24"  # delegated to Microsoft.Web/serverFarms (VNet integration)
    agents: str = "10.40.3.0/24"  # the self-hosted agent pool (VM scale set)
    compute: str = "10.40.4.0/24"  # batch cluster when the workspace has no managed network


class AgentPool(Strict):
    """The self-hosted CI agents inside the VNet (private profile): a Linux VM scale set with a
    user-assigned identity, registered as an Azure DevOps scale-set agent pool named ``name``
    (docs/first-deployment.md). Azure DevOps installs and scales the agent itself."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    kind: Literal["azure_devops_scale_set"] = "azure_devops_scale_set"
    vm_size: str = "Standard_D2s_v5"
    admin_username: str = Field(default="azureagent", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ssh_public_key: str = Field(pattern=r"^(ssh-(rsa|ed25519)|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$")
    image: str = "Canonical:ubuntu-24_04-lts:server:latest"  # publisher:offer:sku:version


class NetworkSettings(Strict):
    """``network: public | private`` or a mapping with ``profile`` (docs/infrastructure.md).

    - public: every resource is reachable from Microsoft-hosted agents (Entra ID auth, TLS only,
      keys/local auth off where Entra ID works); ``allowed_ips`` optionally limits who can reach
      Key Vault, registry, storage and workspace.
    - private: a VNet with private endpoints and private DNS zones; CI runs on ``agent_pool``.
    """

    profile: Literal["public", "private"]
    allowed_ips: list[str] = Field(default_factory=list)  # public: CIDRs or addresses (optional)
    address_space: str = "10.40.0.0/16"
    subnets: Subnets = Subnets()
    agent_pool: AgentPool | None = None
    # FQDN outbound rules of the workspace managed network (approved outbound only); each one
    # is served by a managed Azure Firewall (billed): https://learn.microsoft.com/azure/machine-learning/how-to-managed-network
    egress_fqdns: list[str] = Field(default_factory=list)
    # extra VNets (ids) linked to the private DNS zones, e.g. the AKS cluster's VNet
    dns_zone_links: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"profile": data} if isinstance(data, str) else data


# --------------------------------------------------------------------------- connections


class EnvSecret(Strict):
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class KeyVaultSecret(Strict):
    key_vault_secret: str = Field(pattern=r"^[0-9a-zA-Z-]{1,127}$")


SecretRef = Union[EnvSecret, KeyVaultSecret]


class Connection(Strict):
    name: str
    category: Literal["AzureOpenAI", "OpenAI", "CognitiveSearch", "CognitiveService", "CustomKeys"]
    target: str
    auth_type: Literal["ApiKey", "AAD", "ManagedIdentity"] = "ApiKey"
    api_version: str | None = None
    api_type: Literal["azure", "openai"] | None = None
    # the Azure resource id of the target (Azure OpenAI account, AI Search service): the private
    # profile's managed network gets a private-endpoint outbound rule to it
    resource_id: str | None = None
    secret: SecretRef | None = None
    # bump after rotating the key: the next plan re-sends it to the workspace connection (and to
    # the Key Vault copy App Service reads); write-only values are not diffed otherwise
    key_version: PositiveInt = 1
    shared_to_all: bool = False
    # the model deployments (Azure OpenAI deployment names) flows call through this connection;
    # documentation and `genaiops doctor` (each must exist on the account)
    model_deployments: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_secret_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("key", "api_key", "apiKey", "password", "credentials"):
                if key in data:
                    raise ValueError(
                        f"'{key}' holds a secret value; config files hold references only: "
                        "use 'secret: {env: VAR}' or 'secret: {key_vault_secret: NAME}'"
                    )
            secret = data.get("secret")
            if secret is not None and not isinstance(secret, dict):
                raise ValueError(
                    "'secret' must be a reference, not a value: "
                    "use 'secret: {env: VAR}' or 'secret: {key_vault_secret: NAME}'"
                )
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CONNECTION_NAME_RE.match(value):
            raise ValueError(f"{value!r} must match {_CONNECTION_NAME_RE.pattern}")
        return value

    @model_validator(mode="after")
    def _key_needs_secret(self) -> Connection:
        if self.auth_type == "ApiKey" and self.secret is None:
            raise ValueError(
                "auth_type ApiKey needs 'secret: {env: VAR}' or 'secret: {key_vault_secret: NAME}'"
            )
        return self


# --------------------------------------------------------------------------- deployments


class ManagedTarget(Strict):
    target: Literal["managed"]
    endpoint_name: str | None = None  # default: <prefix>-<env>-<flow>
    instance_type: str = "Standard_DS3_v2"
    instance_count: PositiveInt = 1
    auth_mode: Literal["aad_token", "aml_token", "key"] = "aad_token"
    public_network_access: bool = False  # default: follows network.profile (public -> true)
    request_timeout_ms: Annotated[int, Field(ge=1000, le=180000)] = 60000
    max_concurrent_requests_per_instance: PositiveInt = 4
    data_collection: bool = True


class KubernetesTarget(Strict):
    target: Literal["kubernetes"]
    endpoint_name: str | None = None
    aks_cluster_id: str
    compute_name: str = "aks"
    namespace: str = "azureml"
    instance_type: str = "defaultinstancetype"
    instance_count: PositiveInt = 1
    # Entra ID tokens are for managed endpoints only: Kubernetes takes aml_token or key
    auth_mode: Literal["aad_token", "aml_token", "key"] = "aml_token"
    legacy_inference_cluster: bool = False
    # HTTPS on the extension's inference router: the certificate's CN and the Kubernetes secret
    # (cert.pem, key.pem) in the extension's namespace; unset: HTTP on an internal load balancer
    ssl_cname: str | None = None
    ssl_secret: str | None = None


class AppServiceTarget(Strict):
    target: Literal["appservice"]
    app_name: str | None = None
    sku: str = "P1v3"
    instance_count: PositiveInt = 1
    slot: str = "staging"
    health_check_path: str = "/health"
    always_on: bool = True
    public_network_access: bool = False  # default: follows network.profile (public -> true)


class LocalTarget(Strict):
    target: Literal["local"]
    instance_count: PositiveInt = 1
    workers: PositiveInt = 2


Deployment = Annotated[
    Union[ManagedTarget, KubernetesTarget, AppServiceTarget, LocalTarget],
    Field(discriminator="target"),
]


class SmokeTest(Strict):
    name: str
    request: dict[str, Any]
    expect_keys: list[str] = Field(default_factory=list)
    expect: dict[str, Any] = Field(default_factory=dict)
    expect_one_of: dict[str, list[Any]] = Field(default_factory=dict)


class ReleaseStrategy(Strict):
    strategy: Literal["bluegreen", "ab"] = "bluegreen"
    steps: list[Percent] = Field(default_factory=lambda: [100])
    step_wait_seconds: Annotated[float, Field(ge=0, le=3600)] = 10
    smoke_tests: list[SmokeTest] = Field(default_factory=list)
    max_error_rate: Fraction = 0.01
    max_p99_latency_ms: PositiveInt = 5000
    readiness_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 180
    rollback_window_minutes: Annotated[int, Field(ge=0, le=10080)] = 60
    # A step is judged on real traffic only: with fewer requests than this on the new deployment
    # the step fails ("no traffic observed") unless probe traffic (the smoke requests) makes up
    # the difference. 0 turns the check off (then the step relies on smoke tests alone).
    min_requests_per_step: Annotated[int, Field(ge=0, le=100000)] = 1
    probe_traffic: bool = True
    max_probe_requests: Annotated[int, Field(ge=0, le=10000)] = 200

    @model_validator(mode="after")
    def _steps(self) -> ReleaseStrategy:
        if not self.steps:
            raise ValueError("steps must list at least one traffic percentage, ending at 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps {self.steps} must increase strictly")
        if self.steps[-1] != 100:
            raise ValueError(f"steps {self.steps} must end at 100")
        return self


class FlowSettings(Strict):
    path: str
    experiment: str = "experiment.yaml"
    deployment: Deployment
    release: ReleaseStrategy = ReleaseStrategy()
    run_in: Literal["local", "workspace"] = "local"


# --------------------------------------------------------------------------- local environment


class LocalPorts(Strict):
    registry: Port = 5000
    router: Port = 8088
    model: Port = 8300
    pages: Port = 8301


class LocalSettings(Strict):
    state_dir: str = ".genaiops/local"
    ports: LocalPorts = LocalPorts()
    docker_host: str | None = None  # default: $DOCKER_HOST, the default socket, or our own dockerd
    base_image: str = "genaiops/base-python:bookworm"
    model_api_key: SecretRef = EnvSecret(env="LOCAL_MODEL_API_KEY")
    model_latency_ms: Annotated[float, Field(ge=0, le=60000)] = 0
    model_error_rate: Fraction = 0.0


# --------------------------------------------------------------------------- pricing


class ModelPrice(Strict):
    """List prices of one model or deployment, per 1,000 tokens, in the table's currency."""

    prompt_per_1k: Annotated[float, Field(ge=0)]
    completion_per_1k: Annotated[float, Field(ge=0)]


class Pricing(Strict):
    """What model calls cost, for the cost columns of experiment reports and cost gates.

    ``models`` is keyed by model or deployment name (a call is priced by its deployment name first,
    then by its model name). A call to a model not in the table has no cost: the run's
    ``cost_total`` / ``cost_per_line`` are null ("n/a"), never 0. Prices:
    https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/
    """

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    models: dict[str, ModelPrice] = Field(default_factory=dict)


# --------------------------------------------------------------------------- the environment


def _with_public_default(flow: Any, public: bool) -> Any:
    if not isinstance(flow, dict) or not isinstance(flow.get("deployment"), dict):
        return flow
    deployment = flow["deployment"]
    if deployment.get("target") in ("managed", "appservice"):
        return {**flow, "deployment": {"public_network_access": public, **deployment}}
    return flow


class EnvironmentConfig(Strict):
    environment: str
    kind: Literal["local", "azure"]
    azure: AzureSettings | None = None
    state: StateBackend | None = None
    workspace: WorkspaceSettings = WorkspaceSettings()
    identities: Identities | None = None
    key_vault: KeyVaultSettings = KeyVaultSettings()
    registry: RegistrySettings = RegistrySettings()
    connections: list[Connection] = Field(default_factory=list)
    flows: dict[str, FlowSettings] = Field(default_factory=dict)
    local: LocalSettings | None = None
    pricing: Pricing = Pricing()
    network: NetworkSettings | None = None  # kind azure; default: private for prod, else public

    _example_vars: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """``network`` defaults to private for ``prod`` and public elsewhere; each resource's
        ``public_network_access`` left unset follows the profile (public -> reachable)."""
        if not isinstance(data, dict) or data.get("kind") != "azure":
            return data
        data = dict(data)
        network = data.get("network")
        if network is None:
            network = data["network"] = "private" if data.get("environment") == "prod" else "public"
        profile = network.get("profile") if isinstance(network, dict) else network
        public = profile == "public"
        for section in ("workspace", "key_vault", "registry"):
            value = data.get(section)
            if value is None or isinstance(value, dict):
                data[section] = {"public_network_access": public, **(value or {})}
        flows = data.get("flows")
        if isinstance(flows, dict):
            data["flows"] = {name: _with_public_default(flow, public) for name, flow in flows.items()}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentConfig:
        if self.kind == "azure":
            missing = [k for k in ("azure", "state", "identities") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"kind azure needs sections: {', '.join(missing)}")
            for name, flow in self.flows.items():
                if flow.deployment.target == "local":
                    raise ValueError(
                        f"flows.{name}.deployment.target: 'local' is only for kind local; "
                        "use managed, kubernetes or appservice"
                    )
        else:
            for name, flow in self.flows.items():
                if flow.deployment.target != "local":
                    raise ValueError(
                        f"flows.{name}.deployment.target: kind local deploys with target 'local'"
                    )
                if flow.run_in != "local":
                    raise ValueError(f"flows.{name}.run_in: kind local runs in 'local'")
        names = [c.name for c in self.connections]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"connections: duplicate names {duplicates}")
        return self

    # -- derived names used by infra and release alike ------------------------
    @property
    def network_profile(self) -> Literal["public", "private"]:
        return self.network.profile if self.network else "public"

    @property
    def example_vars(self) -> dict[str, str]:
        """Variable -> field filled from :data:`EXAMPLE_VALUES` (example mode); empty when real."""
        return dict(self._example_vars)

    @property
    def prefix(self) -> str:
        return self.azure.name_prefix if self.azure else "local"

    @property
    def resource_group_name(self) -> str:
        assert self.azure is not None
        return self.azure.resource_group.name or f"{self.prefix}-{self.environment}-rg"

    def endpoint_name(self, flow: str) -> str:
        deployment = self.flows[flow].deployment
        explicit = getattr(deployment, "endpoint_name", None) or getattr(deployment, "app_name", None)
        # cut to Azure ML's 32 characters, never ending in '-'; infra/validate.py refuses two
        # flows whose names end up equal (https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints)
        return explicit or f"{self.prefix}-{self.environment}-{flow.replace('_', '-')}"[:32].rstrip("-")

    def local_settings(self) -> LocalSettings:
        return self.local or LocalSettings()


# --------------------------------------------------------------------------- loading


def resolve_vars(
    value: Any,
    path: str,
    env: dict[str, str],
    file: str,
    example: bool = False,
    used: dict[str, str] | None = None,
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string.

    A ``VAR`` that is unset and has no default is an error naming the file, the field and the
    variable, unless ``example`` is true and :data:`EXAMPLE_VALUES` has it (then its name goes
    into ``used``). All missing variables are reported at once.
    """
    missing: list[str] = []
    used = {} if used is None else used
    out = _resolve(value, path, env, example, used, missing)
    if missing:
        hint = "" if example else f"\n(offline synth and tests: {EXAMPLE_ENV}=1 fills in documented examples)"
        raise ConfigError("\n".join(f"{file}: {line}" for line in missing) + hint)
    return out


def _resolve(
    value: Any, path: str, env: dict[str, str], example: bool, used: dict[str, str], missing: list[str]
) -> Any:
    if isinstance(value, dict):
        return {
            k: _resolve(v, f"{path}.{k}" if path else str(k), env, example, used, missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve(v, f"{path}[{i}]", env, example, used, missing) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if example and name in EXAMPLE_VALUES:
                used[name] = path
                return EXAMPLE_VALUES[name]
            missing.append(
                f"{path}: environment variable {name} is not set; export {name}=... "
                "(docs/first-deployment.md lists every variable)"
            )
            return ""

        return _VAR_RE.sub(substitute, value)
    return value


def example_mode(environ: dict[str, str] | None = None) -> bool:
    """True when ``$GENAIOPS_EXAMPLE`` is ``1``/``true``/``yes`` (offline synth, tests, examples)."""
    value = (os.environ if environ is None else environ).get(EXAMPLE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes")


def require_deployable(cfg: EnvironmentConfig, action: str = "talk to Azure") -> EnvironmentConfig:
    """Refuse a config that holds example or placeholder values before anything reaches Azure.

    Raises :class:`ConfigError` naming each variable filled in example mode and each field that
    holds a placeholder GUID (all zeros, all ones). Returns ``cfg`` for chaining.
    """
    shown = f"config/{cfg.environment}.yaml"
    problems = [
        f"{shown}: {field}: ${name} is not set (example mode filled in "
        f"{EXAMPLE_VALUES[name]!r}); export {name}=... before you {action}"
        for name, field in sorted(cfg.example_vars.items())
    ]
    if cfg.kind == "azure" and cfg.azure is not None and cfg.identities is not None:
        for field, value in (
            ("azure.subscription_id", cfg.azure.subscription_id),
            ("azure.tenant_id", cfg.azure.tenant_id),
            ("identities.deployer_object_id", cfg.identities.deployer_object_id),
        ):
            if value in PLACEHOLDER_GUIDS and field not in cfg.example_vars.values():
                problems.append(
                    f"{shown}: {field}: {value} is a placeholder, not a real id; set the real value "
                    f"before you {action} (docs/first-deployment.md)"
                )
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("managed", "kubernetes", "appservice", "local") and out.endswith("deployment"):
            continue  # the discriminator tag pydantic inserts; not a key the user wrote
        elif str(part).startswith(("function-after", "union_tag", "EnvSecret", "KeyVaultSecret")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Any) -> str:
    kind = error["type"]
    msg: str = error["msg"]
    value = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; unknown keys are not allowed)"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{value!r} is not allowed; expected {error['ctx']['expected']}"
    if kind == "union_tag_invalid":
        return f"{error['ctx']['tag']!r} is not allowed; expected {error['ctx']['expected_tags']}"
    if kind == "union_tag_not_found":
        return f"missing '{error['ctx']['discriminator'].strip(chr(39))}'"
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if value is not None and not isinstance(value, (dict, list)):
        return f"{value!r}: {msg[0].lower()}{msg[1:]}"
    return msg


def format_validation_error(file: str, exc: ValidationError) -> str:
    lines = []
    seen = set()
    for error in exc.errors():
        loc = _loc(tuple(error["loc"]))
        # for a secret union, report one clear line instead of one per union member
        if ".secret" in f".{loc}" and error["type"] in ("missing", "extra_forbidden"):
            loc = loc[: loc.rfind("secret") + len("secret")]
            text = "must be {env: VAR} or {key_vault_secret: NAME}"
        else:
            text = _message(error)
        line = f"{file}: {loc}: {text}" if loc else f"{file}: {text}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def default_config_dir() -> Path:
    """``config/`` of this repository, or ``$GENAIOPS_CONFIG_DIR`` when set (tests, overlays)."""
    override = os.environ.get("GENAIOPS_CONFIG_DIR")
    return Path(override) if override else CONFIG_DIR


def config_path(env: str, config_dir: Path | None = None) -> Path:
    return (config_dir or default_config_dir()) / f"{env}.yaml"


def load_config_file(
    path: Path, environ: dict[str, str] | None = None, example: bool | None = None
) -> EnvironmentConfig:
    """Load one config file; ``example=None`` reads :func:`example_mode` from ``os.environ``."""
    example = example_mode() if example is None else example
    environ = dict(os.environ if environ is None else environ)
    try:
        shown = str(path.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(path)
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigError(f"{shown}: no such config file; environments available: {available}")
    raw = read_mapping(path, shown, ConfigError, "a mapping of settings")
    used: dict[str, str] = {}
    raw = resolve_vars(raw, "", environ, shown, example=example, used=used)
    raw.setdefault("environment", path.stem)
    if raw["environment"] != path.stem:
        raise ConfigError(
            f"{shown}: environment: {raw['environment']!r} does not match the file name {path.stem!r}"
        )
    try:
        cfg = EnvironmentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(shown, exc)) from None
    cfg._example_vars = used  # type: ignore[assignment]  # variable -> field it filled
    return cfg


def load_config(
    env: str,
    config_dir: Path | None = None,
    environ: dict[str, str] | None = None,
    example: bool | None = None,
) -> EnvironmentConfig:
    """Load and validate ``config/<env>.yaml`` (``example``: see :func:`load_config_file`)."""
    if not re.match(r"^[a-z][a-z0-9_-]*$", env):
        raise ConfigError(f"ENV={env!r} is not an environment name; use one of {list(ENVIRONMENTS)}")
    return load_config_file(config_path(env, config_dir), environ, example)


def available_environments(config_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (config_dir or default_config_dir()).glob("*.yaml"))


def resolve_secret(ref: SecretRef, environ: dict[str, str] | None = None) -> str:
    """Resolve a secret reference at run time (env var only; Key Vault refs are for Azure)."""
    environ = dict(os.environ if environ is None else environ)
    if isinstance(ref, EnvSecret):
        if ref.env not in environ:
            raise ConfigError(f"secret: environment variable {ref.env} is not set; export {ref.env}=...")
        return environ[ref.env]
    raise ConfigError(
        f"secret: Key Vault secret {ref.key_vault_secret!r} is resolved inside Azure, not on this machine"
    )
