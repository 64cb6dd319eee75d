"""An oracle for Azure ML request bodies that we did not write: the Azure SDK's generated models.

``azure-ai-ml`` (pinned in pyproject.toml) ships the ARM client generated from the official
Microsoft.MachineLearningServices TypeSpec/REST specs (``azure.ai.ml._restclient.arm_ml_service``,
stable api-version :data:`SDK_API_VERSION`). Every model class declares its JSON properties
(``rest_field(name=...)``), their Python types (annotations: str, int, bool, dict[str, X],
list[X], nested models), extensible enums (``Union[str, <Enum>]``), read-only properties
(``visibility=["read"]``), required ones (keyword-only ``__init__`` parameters without a default)
and polymorphic discriminators (``rest_discriminator`` + ``__mapping__``). :func:`check` walks a
body against them and returns every violation: an unknown property, a wrong JSON type, a value
outside an enum, an unknown discriminator value, a read-only or a missing required property.

The stack pins ``@2024-04-01``; the SDK carries a later stable version of the same types (a
superset). tests/azure/bicep_crosscheck.py compared both against bicep-types-az
``generated/machinelearningservices/microsoft.machinelearningservices/2024-04-01/types.json``;
what exists only in the later version is listed in :data:`NOT_IN_2024_04_01` and refused here,
so the oracle is as strict as the pinned api-version for these types.

Usage::

    problems = check("Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-04-01", body)
    assert problems == []          # each problem: Violation(path="properties.authMode", message=...)
"""

from __future__ import annotations

import copy
import datetime
import enum
import inspect
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from azure.ai.ml._restclient.arm_ml_service import models as _models
from azure.ai.ml._restclient.arm_ml_service._configuration import (
    MachineLearningServicesMgmtClientConfiguration as _Config,
)
from azure.ai.ml._restclient.arm_ml_service._utils.model_base import Model as _MlModel
from azure.ai.ml._restclient.arm_ml_service._utils.model_base import _RestField as _MlRestField
from azure.mgmt.keyvault import models as _kv_models
from azure.mgmt.keyvault._utils.model_base import Model as _KvModel
from azure.mgmt.keyvault._utils.model_base import _RestField as _KvRestField

# Both SDKs are generated with the same TypeSpec model base (each package ships its own copy).
Model = _MlModel | _KvModel
MODEL_BASES = (_MlModel, _KvModel)
REST_FIELDS = (_MlRestField, _KvRestField)

ML = "Microsoft.MachineLearningServices"
# the api-version the generated client defaults to (read from its source, e.g. "2025-12-01")
SDK_API_VERSION: str = re.findall(r'pop\("api_version", "([^"]+)"\)', inspect.getsource(_Config))[0]

# ARM resource type (lower case) -> the SDK model of its PUT body
RESOURCE_MODELS: dict[str, type[Model]] = {
    f"{ML}/workspaces".lower(): _models.Workspace,
    f"{ML}/workspaces/connections".lower(): _models.WorkspaceConnectionPropertiesV2BasicResource,
    f"{ML}/workspaces/onlineEndpoints".lower(): _models.OnlineEndpoint,
    f"{ML}/workspaces/onlineEndpoints/deployments".lower(): _models.OnlineDeployment,
    f"{ML}/workspaces/computes".lower(): _models.ComputeResource,
    f"{ML}/workspaces/outboundRules".lower(): _models.OutboundRuleBasicResource,
    # Key Vault secrets written through ARM (infra/components/vault_secrets.py), azure-mgmt-keyvault
    "Microsoft.KeyVault/vaults/secrets".lower(): _kv_models.SecretCreateOrUpdateParameters,
}
# the api-version each type is pinned to in the stacks (the SDK models are that version or later)
PINNED_API_VERSIONS = {ML.lower(): "2024-04-01", "microsoft.keyvault": "2023-07-01"}


# Found by tests/azure/bicep_crosscheck.py (bicep-types-az 1f896de, 2024-04-01 vs the SDK's
# 2025-12-01): writable properties and enum values that 2024-04-01 does not have.
NOT_IN_2024_04_01: dict[str, frozenset[str]] = {
    # model class name -> JSON property names
    "WorkspaceConnectionPropertiesV2": frozenset(
        {"error", "peRequirement", "peStatus", "useWorkspaceManagedIdentity"}
    ),
    "ManagedOnlineDeployment": frozenset({"startupProbe"}),
    "KubernetesOnlineDeployment": frozenset({"startupProbe"}),
    "WorkspaceProperties": frozenset(
        {"enableServiceSideCMKEncryption", "provisionNetworkNow", "systemDatastoresAuthMode"}
    ),
    "ManagedNetworkSettings": frozenset({"enableNetworkMonitor", "firewallSku", "managedNetworkKind"}),
    "PrivateEndpointOutboundRule": frozenset({"fqdns"}),
    "ComputeInstanceProperties": frozenset({"enableSSO", "idleTimeBeforeShutdown"}),
}
NEW_ENUM_VALUES: dict[str, frozenset[str]] = {
    # enum class name -> values added after 2024-04-01
    "ConnectionCategory": frozenset(
        {
            "ApiManagement",
            "AppConfig",
            "AppInsights",
            "AzureContainerAppEnvironment",
            "AzureKeyVault",
            "AzureStorageAccount",
            "Databricks",
            "Elasticsearch",
            "GroundingWithBingSearch",
            "GroundingWithCustomSearch",
            "ManagedOnlineEndpoint",
            "MicrosoftFabric",
            "ModelGateway",
            "Pinecone",
            "PowerPlatformEnvironment",
            "RemoteA2A",
            "RemoteTool",
            "Sharepoint",
        }
    ),
}


def _newer(cls: type[Model], key: str) -> bool:
    return any(key in NOT_IN_2024_04_01.get(base.__name__, ()) for base in cls.__mro__)


@dataclass(frozen=True)
class Violation:
    path: str  # JSON path in the body, e.g. "properties.authMode"
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<body>'}: {self.message}"


class UnknownResourceType(KeyError):
    pass


def model_for(resource_type: str) -> type[Model]:
    """The SDK model for ``<namespace>/<type>[@api-version]``; :class:`UnknownResourceType` if none."""
    key = resource_type.split("@", 1)[0].lower()
    if key not in RESOURCE_MODELS:
        raise UnknownResourceType(f"no SDK model registered for {resource_type!r}")
    return RESOURCE_MODELS[key]


def check(resource_type: str, body: dict[str, Any], *, case_sensitive_enums: bool = True) -> list[Violation]:
    """All violations of ``body`` (a PUT body in REST shape) against the type's SDK model.

    ``case_sensitive_enums=False`` compares enum values like the service does for extensible
    enums sent by the SDKs (which write e.g. ``"disabled"``); the default is the strict
    comparison azapi's embedded schema and bicep make.
    """
    return list(_walk(body, model_for(resource_type), "", case_sensitive_enums))


# -- model introspection -------------------------------------------------------------------
@dataclass(frozen=True)
class _Field:
    attr: str
    rest_name: str
    annotation: Any
    read_only: bool
    discriminator: bool


@cache
def _fields(cls: type[Model]) -> dict[str, _Field]:
    """JSON property name -> field, over the class and its bases."""
    # annotations name the package's public models module as ``_models`` (enums included)
    package = _kv_models if cls.__module__.startswith("azure.mgmt.keyvault") else _models
    hints = typing.get_type_hints(cls, localns={"_models": package})
    out: dict[str, _Field] = {}
    for base in reversed(cls.__mro__):
        for attr, value in vars(base).items():
            if isinstance(value, REST_FIELDS):
                rest = value._rest_name_input or attr
                out[rest] = _Field(
                    attr=attr,
                    rest_name=rest,
                    annotation=hints.get(attr, Any),
                    read_only=value._visibility == ["read"],
                    discriminator=value._is_discriminator,
                )
    return out


@cache
def _required(cls: type[Model]) -> frozenset[str]:
    """JSON names of the keyword-only ``__init__`` parameters without a default (the SDK's Required)."""
    overloads = typing.get_overloads(cls.__init__)
    if not overloads:
        return frozenset()
    params = inspect.signature(overloads[0]).parameters
    by_attr = {f.attr: f.rest_name for f in _fields(cls).values()}
    return frozenset(
        by_attr[name]
        for name, p in params.items()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and name in by_attr
    )


def _discriminated(
    cls: type[Model], value: dict[str, Any], path: str
) -> tuple[type[Model], Violation | None]:
    mapping: dict[str, type[Model]] = cls.__dict__.get("__mapping__") or {}
    field = next((f for f in _fields(cls).values() if f.discriminator), None)
    if not mapping or field is None:
        return cls, None
    given = value.get(field.rest_name)
    if given is None:
        return cls, Violation(_join(path, field.rest_name), "required discriminator is missing")
    sub = mapping.get(given)
    if sub is None:
        known = "|".join(sorted(mapping))
        return cls, Violation(_join(path, field.rest_name), f"{given!r} is not one of {known}")
    return sub, None


# -- the walk --------------------------------------------------------------------------------
def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(value: Any, annotation: Any, path: str, strict_enums: bool) -> Iterator[Violation]:
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is object:
        return
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return
        enums = [a for a in members if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            yield from _enum(value, enums, path, strict_enums)
            return
        if len(members) == 1:
            yield from _walk(value, members[0], path, strict_enums)
            return
        if not any(not list(_walk(value, m, path, strict_enums)) for m in members):
            yield Violation(path, f"{value!r} matches none of {annotation}")
        return
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        allowed_values = [a.value if isinstance(a, enum.Enum) else a for a in allowed]
        if value not in allowed_values:
            yield Violation(path, f"{value!r} is not {'|'.join(map(str, allowed_values))}")
        return
    if origin is dict:
        if not isinstance(value, dict):
            yield Violation(path, f"expected an object (map), got {type(value).__name__}")
            return
        _, item = typing.get_args(annotation) or (str, Any)
        for key, sub in value.items():
            yield from _walk(sub, item, _join(path, str(key)), strict_enums)
        return
    if origin is list:
        if not isinstance(value, list):
            yield Violation(path, f"expected an array, got {type(value).__name__}")
            return
        (item,) = typing.get_args(annotation) or (Any,)
        for i, sub in enumerate(value):
            yield from _walk(sub, item, f"{path}[{i}]", strict_enums)
        return
    if isinstance(annotation, type) and issubclass(annotation, MODEL_BASES):
        yield from _model(value, annotation, path, strict_enums)
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        yield from _enum(value, [annotation], path, strict_enums)
        return
    yield from _scalar(value, annotation, path)


def _model(value: Any, cls: type[Model], path: str, strict_enums: bool) -> Iterator[Violation]:
    if not isinstance(value, dict):
        yield Violation(path, f"expected an object ({cls.__name__}), got {type(value).__name__}")
        return
    cls, problem = _discriminated(cls, value, path)
    if problem:
        yield problem
        return
    fields = _fields(cls)
    for key, sub in value.items():
        field = fields.get(key)
        if field is None:
            yield Violation(_join(path, key), f"unknown property of {cls.__name__}")
            continue
        if _newer(cls, key):
            yield Violation(
                _join(path, key), f"property of {cls.__name__} added after api-version 2024-04-01"
            )
            continue
        if field.read_only:
            yield Violation(_join(path, key), f"read-only property of {cls.__name__} (set by Azure)")
            continue
        if field.discriminator:
            continue  # checked by _discriminated
        yield from _walk(sub, field.annotation, _join(path, key), strict_enums)
    for name in sorted(_required(cls) - value.keys()):
        yield Violation(_join(path, name), f"required property of {cls.__name__} is missing")


def _enum(value: Any, enums: list[type[enum.Enum]], path: str, strict: bool) -> Iterator[Violation]:
    known = [
        str(m.value) for e in enums for m in e if str(m.value) not in NEW_ENUM_VALUES.get(e.__name__, ())
    ]
    if not isinstance(value, str):
        yield Violation(path, f"expected a string enum ({'|'.join(known)}), got {type(value).__name__}")
    elif value not in known and (strict or value.lower() not in {k.lower() for k in known}):
        yield Violation(path, f"{value!r} is not one of {'|'.join(known)} ({enums[0].__name__})")


_SCALARS: dict[Any, tuple[type, ...]] = {
    str: (str,),
    bool: (bool,),
    int: (int,),
    float: (int, float),
    datetime.datetime: (str,),  # ISO 8601 on the wire
    datetime.timedelta: (str,),  # ISO 8601 duration, e.g. "PT1M"
    datetime.date: (str,),
    bytes: (str,),
}


def _scalar(value: Any, annotation: Any, path: str) -> Iterator[Violation]:
    allowed = _SCALARS.get(annotation)
    if allowed is None:
        return  # a type the SDK models leave open
    if isinstance(value, bool) and bool not in allowed:
        yield Violation(path, f"expected {annotation.__name__}, got bool")
    elif not isinstance(value, allowed):
        yield Violation(path, f"expected {annotation.__name__}, got {type(value).__name__} {value!r}")


# -- azapi resources in a synthesized stack --------------------------------------------------
def azapi_request_body(resource: dict[str, Any]) -> dict[str, Any]:
    """The PUT body azapi sends for one ``resource.azapi_resource.<id>`` of cdk.tf.json: ``body``
    plus the top-level ``location``, ``identity`` and ``tags`` arguments, with ``sensitive_body``
    merged in (its values are Terraform references, strings on the wire)."""
    body = copy.deepcopy(resource.get("body") or {})
    if "location" in resource:
        body["location"] = resource["location"]
    if resource.get("identity"):
        identity = resource["identity"][0] if isinstance(resource["identity"], list) else resource["identity"]
        body["identity"] = {k: v for k, v in identity.items() if k in ("type", "identity_ids")}
        if "identity_ids" in body["identity"]:
            ids = body["identity"].pop("identity_ids")
            body["identity"]["userAssignedIdentities"] = {i: {} for i in ids}
    if resource.get("tags"):
        body["tags"] = resource["tags"]
    _deep_merge(body, resource.get("sensitive_body") or {})
    return body


def _deep_merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def check_stack(doc: dict[str, Any]) -> dict[str, list[Violation]]:
    """Every azapi_resource of a synthesized stack: logical id -> violations (empty = accepted).

    A resource of a type without a registered model is reported as one violation, so a new
    azapi type cannot slip past the oracle unchecked."""
    out: dict[str, list[Violation]] = {}
    for logical, resource in (doc.get("resource", {}).get("azapi_resource") or {}).items():
        try:
            out[logical] = check(resource["type"], azapi_request_body(resource))
        except UnknownResourceType as exc:
            out[logical] = [Violation("type", str(exc))]
    return out
