"""Linux web app for containers with a staging slot (azure-mgmt-web).

Two slots hold two deployments: ``production`` (what the app's host name serves) and the
staging slot. A release goes to the staging slot, is warmed up on the slot's own host name, and
then either

* blue/green: the slots are swapped (``POST .../slots/<slot>/slotsswap``), so the old release
  stays warm in the staging slot for a rollback (swap back); or
* A/B: a routing percentage sends that share of production traffic to the slot
  (``siteConfig.experiments.rampUpRules[].reroutePercentage``).

Which release runs in a slot travels with the slot content as the app settings
``GENAIOPS_DEPLOYMENT`` and ``GENAIOPS_IMAGE`` (not slot-sticky, so they swap with the image).
Secrets are Key Vault references (``@Microsoft.KeyVault(SecretUri=...)``) resolved by the app's
identity; the image is pulled with the app's managed identity (``acrUseManagedIdentityCreds``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from azure.core.rest import HttpRequest
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import (
    CsmSlotEntity,
    Experiments,
    RampUpRule,
    Site,
    SiteConfig,
    SiteConfigResource,
    SiteProperties,
    StringDictionary,
)

from infra.naming import key_vault_secret
from release.azure import names
from release.azure.clients import AzureContext, find, must, poll_until, wait_lro
from release.azure.online import SERVING_PORT, check_image
from release.azure.telemetry import RequestTelemetry
from release.config import AppServiceTarget as AppServiceSettings
from release.config import EnvironmentConfig
from release.errors import CheckFailed, UserError
from release.release_state import CREATED_LABEL
from release.targets.base import DeploymentInfo, DeploymentSpec, Target, TrafficMetrics, validate_traffic

log = logging.getLogger(__name__)

PRODUCTION = "production"
DEPLOYMENT_SETTING = "GENAIOPS_DEPLOYMENT"
IMAGE_SETTING = "GENAIOPS_IMAGE"
CREATED_SETTING = "GENAIOPS_CREATED_AT"  # swaps with the slot content, like the two above
SWAP_TIMEOUT_S = 900.0
SLOT_TIMEOUT_S = 600.0
WARMUP_INTERVAL_S = 5.0
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
_KV_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


def key_vault_reference(cfg: EnvironmentConfig, ref: str) -> str:
    """An app setting value that App Service resolves from Key Vault with the app's identity.

    ``ref`` names the Key Vault secret; an environment-variable style name (``AOAI_API_KEY``)
    maps to the secret infra writes for it (``aoai-api-key``)."""
    secret = ref if _KV_NAME_RE.match(ref) else key_vault_secret(ref)
    if not _KV_NAME_RE.match(secret):
        raise UserError(f"secret reference {ref!r} is not a Key Vault secret name (letters, digits, '-')")
    return f"@Microsoft.KeyVault(SecretUri={names.key_vault_secret_uri(cfg, secret)})"


class AppServiceTarget(Target):
    settings: AppServiceSettings
    removes_deployments = False  # the staging slot belongs to infra (review M7)
    measures_traffic = True  # Application Insights AppRequests, role name = deployment

    def __init__(self, cfg: EnvironmentConfig, flow: str, ctx: AzureContext | None = None) -> None:
        if flow not in cfg.flows:
            raise UserError(
                f"config/{cfg.environment}.yaml: flows: no flow {flow!r}; known: {sorted(cfg.flows)}"
            )
        settings = cfg.flows[flow].deployment
        if not isinstance(settings, AppServiceSettings):
            raise UserError(
                f"config/{cfg.environment}.yaml: flows.{flow}.deployment.target is not appservice"
            )
        self.cfg = cfg
        self.flow = flow
        self.settings = settings
        self.ctx = ctx or AzureContext.from_config(cfg)
        self.app = cfg.endpoint_name(flow)
        self.slot = settings.slot
        self.rg = self.ctx.resource_group
        self._web: WebSiteManagementClient | None = None
        self.warmup_interval_s = WARMUP_INTERVAL_S
        self.telemetry: RequestTelemetry | None = None  # built on first use (canary metrics)

    @property
    def web(self) -> WebSiteManagementClient:
        if self._web is None:
            self._web = self.ctx.web_client()
        return self._web

    # -- reading state ------------------------------------------------------------------
    def _site(self) -> Site:
        return must(f"get web app {self.app}", lambda: self.web.web_apps.get(self.rg, self.app))

    def _slot_site(self) -> Site | None:
        return find(
            f"get slot {self.app}/{self.slot}",
            lambda: self.web.web_apps.get_slot(self.rg, self.app, self.slot),
        )

    def _host(self, slot: str) -> str:
        site = self._site() if slot == PRODUCTION else self._slot_site()
        host = site.properties.default_host_name if site is not None and site.properties else None
        if not host:
            raise UserError(f"web app {self.app} slot {slot} has no host name; is it deployed?")
        return str(host)

    def _settings(self, slot: str) -> dict[str, str]:
        if slot == PRODUCTION:
            result = must(
                f"read app settings of {self.app}",
                lambda: self.web.web_apps.list_application_settings(self.rg, self.app),
            )
        else:
            result = must(
                f"read app settings of {self.app}/{slot}",
                lambda: self.web.web_apps.list_application_settings_slot(self.rg, self.app, slot),
            )
        return dict(result.properties or {})

    def _ramp(self) -> float:
        config = must(
            f"read config of {self.app}", lambda: self.web.web_apps.get_configuration(self.rg, self.app)
        )
        props = config.properties
        rules = (props.experiments.ramp_up_rules if props and props.experiments else None) or []
        return float(sum(r.reroute_percentage or 0 for r in rules if (r.name or "") == self.slot))

    def _slots(self) -> dict[str, tuple[str, str]]:
        """slot -> (deployment name, image) for the slots that hold a release."""
        return {slot: (name, image) for slot, (name, image, _) in self._slot_releases().items()}

    def _slot_releases(self) -> dict[str, tuple[str, str, str]]:
        """slot -> (deployment name, image, created-at) from the slots' app settings."""
        out: dict[str, tuple[str, str, str]] = {}
        for slot in (PRODUCTION, self.slot):
            if slot != PRODUCTION and self._slot_site() is None:
                continue
            values = self._settings(slot)
            if values.get(DEPLOYMENT_SETTING):
                out[slot] = (
                    values[DEPLOYMENT_SETTING],
                    values.get(IMAGE_SETTING, ""),
                    values.get(CREATED_SETTING, ""),
                )
        return out

    # -- Target ---------------------------------------------------------------------
    def ensure_endpoint(self) -> None:
        """The web app and its plan come from infra; the staging slot is created when missing."""
        site = self._site()
        if self._slot_site() is not None:
            return
        log.info("creating slot %s/%s", self.app, self.slot)
        props = site.properties
        envelope = Site(
            location=site.location,
            tags=dict(site.tags or {}),
            identity=site.identity,
            properties=SiteProperties(
                server_farm_id=props.server_farm_id if props else None,
                https_only=True,
                key_vault_reference_identity=props.key_vault_reference_identity if props else None,
                site_config=SiteConfig(
                    acr_use_managed_identity_creds=True,
                    always_on=self.settings.always_on,
                    health_check_path=self.settings.health_check_path,
                    ftps_state="Disabled",
                    min_tls_version="1.2",
                    http20_enabled=True,
                ),
            ),
        )
        poller = must(
            f"create slot {self.app}/{self.slot}",
            lambda: self.web.web_apps.begin_create_or_update_slot(self.rg, self.app, self.slot, envelope),
        )
        wait_lro(poller, f"slot {self.app}/{self.slot}", SLOT_TIMEOUT_S)

    def app_settings(self, spec: DeploymentSpec) -> dict[str, str]:
        values = dict(spec.env)
        for var, ref in spec.secret_env.items():
            values[var] = key_vault_reference(self.cfg, ref)
        values.update(
            {
                "WEBSITES_PORT": str(SERVING_PORT),
                "WEBSITES_ENABLE_APP_SERVICE_STORAGE": "false",
                "PROMPTFLOW_RUN_MODE": "serving",
                "APPLICATIONINSIGHTS_CONNECTION_STRING": key_vault_reference(
                    self.cfg, names.app_insights_secret(self.cfg)
                ),
                # App Insights has local auth off: telemetry authenticates with the app's identity
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD",
                DEPLOYMENT_SETTING: spec.name,
                IMAGE_SETTING: spec.image,
                CREATED_SETTING: spec.labels.get(CREATED_LABEL, ""),
                # telemetry's cloud role name = the deployment (swaps with the slot content)
                "OTEL_SERVICE_NAME": spec.name,
            }
        )
        return values

    def create_or_update(self, spec: DeploymentSpec, timeout_s: float) -> DeploymentInfo:
        check_image(spec.image)
        if not _NAME_RE.match(spec.name):
            raise UserError(f"deployment name {spec.name!r}: use letters, digits, '.', '_' or '-'")
        slots = self._slots()
        if slots.get(PRODUCTION, ("", ""))[0] == spec.name:
            raise UserError(f"deployment {spec.name} already serves production on {self.app}; use a new name")
        if self.slot in slots and slots[self.slot][0] != spec.name and self._ramp() > 0:
            raise UserError(
                f"slot {self.app}/{self.slot} holds {slots[self.slot][0]} with live traffic; "
                "finish or roll back that release first"
            )
        self.ensure_endpoint()
        log.info("deploying %s to %s/%s as %s", spec.image, self.app, self.slot, spec.name)
        must(
            f"set app settings of {self.app}/{self.slot}",
            lambda: self.web.web_apps.update_application_settings_slot(
                self.rg, self.app, self.slot, StringDictionary(properties=self.app_settings(spec))
            ),
        )
        config = SiteConfigResource(
            properties=SiteConfig(
                linux_fx_version=f"DOCKER|{spec.image}",
                acr_use_managed_identity_creds=True,
                health_check_path=self.settings.health_check_path,
                always_on=self.settings.always_on,
            )
        )
        must(
            f"set the image of {self.app}/{self.slot}",
            lambda: self.web.web_apps.update_configuration_slot(self.rg, self.app, self.slot, config),
        )
        self.warm_up(self._host(self.slot), timeout_s)
        return DeploymentInfo(spec.name, spec.image, "Succeeded", int(self._ramp()), dict(spec.labels))

    def warm_up(self, host: str, timeout_s: float) -> None:
        """Bounded wait until the slot answers its health path (the first request pulls and starts)."""
        url = f"https://{host}{self.settings.health_check_path}"

        def healthy() -> bool:
            try:
                return self.ctx.http(HttpRequest("GET", url)).status_code == 200
            except Exception as exc:  # a slot that is still starting refuses or resets connections
                log.debug("warm-up %s: %s", url, exc)
                return False

        try:
            poll_until(healthy, f"warm-up of {url}", timeout_s, self.warmup_interval_s)
        except CheckFailed as exc:
            raise CheckFailed(f"{exc}; production traffic was not changed") from None

    def list_deployments(self) -> list[DeploymentInfo]:
        slots = self._slot_releases()
        ramp = int(self._ramp()) if self.slot in slots else 0
        out = []
        for slot, (name, image, created) in slots.items():
            share = (100 - ramp) if slot == PRODUCTION else ramp
            labels = {"slot": slot, **({CREATED_LABEL: created} if created else {})}
            out.append(DeploymentInfo(name, image, "Succeeded", share, labels))
        return sorted(out, key=lambda i: i.name)

    def get_traffic(self) -> dict[str, int]:
        return {d.name: d.traffic for d in self.list_deployments() if d.traffic > 0}

    def _set_ramp(self, percent: int) -> None:
        rules = []
        if percent > 0:
            rules = [
                RampUpRule(name=self.slot, action_host_name=self._host(self.slot), reroute_percentage=percent)
            ]
        config = SiteConfigResource(properties=SiteConfig(experiments=Experiments(ramp_up_rules=rules)))
        must(
            f"set routing of {self.app}",
            lambda: self.web.web_apps.update_configuration(self.rg, self.app, config),
        )

    def set_traffic(self, traffic: dict[str, int]) -> None:
        slots = self._slots()
        by_name = {name: slot for slot, (name, _) in slots.items()}
        wanted = validate_traffic(traffic, set(by_name))
        staging_name = slots.get(self.slot, ("", ""))[0]
        staging_share = wanted.get(staging_name, 0) if staging_name else 0
        log.info("traffic on %s: %s", self.app, wanted)
        if staging_share == 100:
            # blue/green: swap first (the old release moves to the slot, still warm), then drop
            # the routing rule that would otherwise send a share to the old release.
            poller = must(
                f"swap {self.app}/{self.slot} into production",
                lambda: self.web.web_apps.begin_swap_slot(
                    self.rg, self.app, self.slot, CsmSlotEntity(target_slot=PRODUCTION, preserve_vnet=True)
                ),
            )
            wait_lro(poller, f"slot swap of {self.app}", SWAP_TIMEOUT_S)
            self._set_ramp(0)
        else:
            self._set_ramp(staging_share)

    def scoring_url(self, deployment: str | None = None) -> str:
        slot = PRODUCTION
        if deployment is not None:
            found = {name: s for s, (name, _) in self._slots().items()}
            if deployment not in found:
                raise UserError(
                    f"web app {self.app} has no deployment {deployment!r}; known: {sorted(found)}"
                )
            slot = found[deployment]
        return f"https://{self._host(slot)}/score"

    def auth_headers(self, deployment: str | None = None) -> dict[str, str]:
        # Access is restricted by the network (private endpoint / access restrictions from infra).
        return {}

    def delete(self, deployment: str) -> None:
        """Retire ``deployment`` from the staging slot without deleting the slot.

        The slot, its identity and their role assignments belong to infra (review M7: a slot
        deleted here and re-created later has a new identity with no AcrPull or Key Vault
        access). The slot's release settings are cleared instead, so it holds no release.
        """
        slots = self._slots()
        slot = next((s for s, (name, _) in slots.items() if name == deployment), None)
        if slot is None:
            return
        if slot == PRODUCTION:
            raise UserError(f"deployment {deployment} serves production on {self.app}; roll back instead")
        if self._ramp() > 0:
            raise UserError(f"deployment {deployment} still receives traffic; set its share to 0 first")
        kept = {
            k: v
            for k, v in self._settings(self.slot).items()
            if k not in (DEPLOYMENT_SETTING, IMAGE_SETTING, CREATED_SETTING)
        }
        must(
            f"clear the release of slot {self.app}/{self.slot}",
            lambda: self.web.web_apps.update_application_settings_slot(
                self.rg, self.app, self.slot, StringDictionary(properties=kept)
            ),
        )

    def traffic_metrics(self, since: float) -> dict[str, TrafficMetrics]:
        """Real traffic per slot's deployment from the environment's Application Insights
        (:mod:`release.azure.telemetry`; ``AppRoleName`` = ``OTEL_SERVICE_NAME`` = deployment)."""
        if self.telemetry is None:
            self.telemetry = RequestTelemetry(self.ctx, self.cfg)
        return self.telemetry.metrics("appservice", lambda: [n for n, _ in self._slots().values()], since)

    def describe(self) -> dict[str, Any]:
        return {"app": self.app, "slot": self.slot, "traffic": self.get_traffic()}
