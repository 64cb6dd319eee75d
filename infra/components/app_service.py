"""App Service plan + Linux web app for containers + a staging slot for blue/green swaps.

HTTPS only, TLS >= 1.2, FTP and basic-auth publishing off, health check path, a system
identity on the app and on the slot that pulls from the registry with AcrPull (no registry
password). The release tooling owns what runs in each slot: it writes the slot's app settings
(Key Vault references, ``GENAIOPS_DEPLOYMENT``...) and image, and a swap exchanges both between
the app and the slot, so Terraform ignores ``app_settings`` and ``application_stack`` on both
after creating them. The initial app settings already point
``APPLICATIONINSIGHTS_CONNECTION_STRING`` at the Key Vault secret infra writes.

Private profile (``subnet_id`` given): app and slot join ``snet-app-service`` (regional VNet
integration) with ``vnet_image_pull_enabled`` (the image is pulled through the VNet, from the
registry's private endpoint) and ``vnet_route_all_enabled`` (Key Vault references and all other
outbound traffic go through the VNet), and they are reached through their own private endpoints
(:mod:`infra.components.network`). Sources:
https://learn.microsoft.com/azure/app-service/configure-custom-container#use-an-image-from-a-network-protected-registry,
https://learn.microsoft.com/azure/app-service/app-service-key-vault-references

Slot lifecycle: infra owns the slot and its identity's role assignments. The release tooling
must never delete it (a recreated slot gets a new identity without AcrPull, Key Vault or
telemetry roles); if it was deleted, ``make plan/apply`` recreates it with its grants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cdktf
from cdktf_cdktf_provider_azurerm.linux_web_app import LinuxWebApp
from cdktf_cdktf_provider_azurerm.linux_web_app_slot import LinuxWebAppSlot
from cdktf_cdktf_provider_azurerm.service_plan import ServicePlan
from constructs import Construct

from release.config import AppServiceTarget

PLACEHOLDER_IMAGE = "genaiops/placeholder:0"  # replaced by `genaiops release`
# written by release/targets/appservice.py (slot app settings, linuxFxVersion) and by slot swaps
RELEASE_OWNED = ["app_settings", "site_config[0].application_stack"]


def key_vault_reference(key_vault_uri: str, secret: str) -> str:
    """``@Microsoft.KeyVault(SecretUri=...)`` for a versionless secret (``vault_uri`` ends in /)."""
    return f"@Microsoft.KeyVault(SecretUri={key_vault_uri}secrets/{secret})"


def _site_config(target: AppServiceTarget, registry_login_server: str, vnet: bool) -> dict[str, Any]:
    return {
        "vnet_route_all_enabled": vnet,
        "always_on": target.always_on,
        "health_check_path": target.health_check_path,
        "health_check_eviction_time_in_min": 5,
        "minimum_tls_version": "1.2",
        "scm_minimum_tls_version": "1.2",
        "ftps_state": "Disabled",
        "http2_enabled": True,
        "remote_debugging_enabled": False,
        "container_registry_use_managed_identity": True,
        "application_stack": {
            "docker_image_name": PLACEHOLDER_IMAGE,
            "docker_registry_url": f"https://{registry_login_server}",
        },
    }


def _common(
    target: AppServiceTarget, registry_login_server: str, app_insights_reference: str, subnet_id: str | None
) -> dict[str, Any]:
    vnet = {"virtual_network_subnet_id": subnet_id, "vnet_image_pull_enabled": True} if subnet_id else {}
    return {
        **vnet,
        "https_only": True,
        "public_network_access_enabled": target.public_network_access,
        "client_certificate_enabled": False,
        "ftp_publish_basic_authentication_enabled": False,
        "webdeploy_publish_basic_authentication_enabled": False,
        "identity": {"type": "SystemAssigned"},
        "site_config": _site_config(target, registry_login_server, subnet_id is not None),
        "app_settings": {
            "WEBSITES_PORT": "8080",
            "PROMPTFLOW_RUN_MODE": "serving",
            "WEBSITES_ENABLE_APP_SERVICE_STORAGE": "false",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": app_insights_reference,
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD",  # local auth is off
        },
        "logs": {
            "detailed_error_messages": True,
            "failed_request_tracing": True,
            "http_logs": {"file_system": {"retention_in_days": 7, "retention_in_mb": 35}},
        },
        "lifecycle": cdktf.TerraformResourceLifecycle(ignore_changes=RELEASE_OWNED),
    }


class WebApp(Construct):
    """Exposes ``app_name``, ``slot_name``, ``app_id``, ``slot_id`` and both principal ids."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        target: AppServiceTarget,
        app_name: str,
        plan_name: str,
        resource_group_name: str,
        location: str,
        registry_login_server: str,
        app_insights_reference: str,
        subnet_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        common = _common(target, registry_login_server, app_insights_reference, subnet_id)
        self.plan = ServicePlan(
            self,
            "plan",
            name=plan_name,
            resource_group_name=resource_group_name,
            location=location,
            os_type="Linux",
            sku_name=target.sku,
            worker_count=target.instance_count,
            tags=dict(tags or {}),
        )
        self.app = LinuxWebApp(
            self,
            "app",
            name=app_name,
            resource_group_name=resource_group_name,
            location=location,
            service_plan_id=self.plan.id,
            tags=dict(tags or {}),
            **common,
        )
        self.slot = LinuxWebAppSlot(
            self,
            "slot",
            name=target.slot,
            app_service_id=self.app.id,
            tags=dict(tags or {}),
            **common,
        )
        self.app_name = app_name
        self.slot_name = target.slot
        self.app_id = self.app.id
        self.slot_id = self.slot.id
        self.principal_id = self.app.identity.principal_id
        self.slot_principal_id = self.slot.identity.principal_id
