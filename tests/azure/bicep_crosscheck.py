"""Cross-check the SDK-model oracle (tests/azure/oracle.py) against bicep-types-az, once, by hand.

bicep-types-az is generated from the same REST specs per api-version; it is not vendored here.
Fetch it yourself and point this script at the api-version's ``types.json``::

    git show HEAD:generated/machinelearningservices/microsoft.machinelearningservices/2024-04-01/types.json \
        > /tmp/types.json          # in a clone of github.com/Azure/bicep-types-az
    .venv/bin/python tests/azure/bicep_crosscheck.py /tmp/types.json

It walks each resource type the oracle knows, in both sources side by side, and prints every
difference in writable property names, enum values and discriminator values (depth-bounded).
"""

from __future__ import annotations

import enum
import json
import sys
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a site-packages "tests" shadows ours

from oracle import RESOURCE_MODELS, Model, _fields

READ_ONLY = 2  # bicep-types flags: 1 Required, 2 ReadOnly, 4 WriteOnly, 8 DeployTimeConstant
TOP_LEVEL_SKIPPED = {"id", "name", "type", "apiVersion", "systemData"}


def _deref(types: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    return types[int(ref["$ref"].split("/")[-1])]


def _bicep_props(types: list[dict[str, Any]], node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    props = dict(node.get("properties") or node.get("baseProperties") or {})
    return {k: v for k, v in props.items() if not (v.get("flags", 0) & READ_ONLY)}


def _literals(types: list[dict[str, Any]], node: dict[str, Any]) -> set[str] | None:
    if node.get("$type") == "StringLiteralType":
        return {node["value"]}
    if node.get("$type") == "UnionType":
        values: set[str] = set()
        for element in node["elements"]:
            sub = _literals(types, _deref(types, element))
            if sub is None:
                return None  # an open union (string or literal): not an enum
            values |= sub
        return values
    return None


def _open_literals(types: list[dict[str, Any]], node: dict[str, Any]) -> set[str]:
    """The literal members of a union, also when it is open (string or literal)."""
    if node.get("$type") == "StringLiteralType":
        return {node["value"]}
    if node.get("$type") == "UnionType":
        return set().union(*(_open_literals(types, _deref(types, e)) for e in node["elements"]))
    return set()


def _sdk_model(annotation: Any) -> type | None:
    for arg in [annotation, *typing.get_args(annotation)]:
        if isinstance(arg, type) and issubclass(arg, Model):
            return arg
    return None


def _sdk_enum(annotation: Any) -> set[str] | None:
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return {str(m.value) for m in arg}
    return None


def compare(types: list[dict[str, Any]], node: dict[str, Any], cls: type, path: str, depth: int) -> list[str]:
    out: list[str] = []
    if depth > 5:
        return out
    if node.get("$type") == "DiscriminatedObjectType":
        mapping = cls.__dict__.get("__mapping__") or {}
        bicep_values = set(node["elements"])
        sdk_values = set(mapping)
        if bicep_values - sdk_values:
            out.append(f"{path}.{node['discriminator']}: only in bicep: {sorted(bicep_values - sdk_values)}")
        if sdk_values - bicep_values:
            out.append(f"{path}.{node['discriminator']}: only in SDK: {sorted(sdk_values - bicep_values)}")
        for value in sorted(bicep_values & sdk_values):
            element = _deref(types, node["elements"][value])
            merged = {
                **node,
                "properties": {**node.get("baseProperties", {}), **element.get("properties", {})},
            }
            merged["$type"] = "ObjectType"
            out += compare(types, merged, mapping[value], f"{path}[{value}]", depth + 1)
        return out
    bicep = _bicep_props(types, node)
    sdk = {k: f for k, f in _fields(cls).items() if not f.read_only and not f.discriminator}
    if depth == 0:
        bicep = {k: v for k, v in bicep.items() if k not in TOP_LEVEL_SKIPPED}
    discriminator = node.get("discriminator")
    for key in sorted(set(sdk) - set(bicep) - {discriminator}):
        out.append(f"{path}.{key}: only in SDK {cls.__name__}")
    for key in sorted(set(bicep) - set(sdk) - {discriminator}):
        out.append(f"{path}.{key}: only in bicep")
    for key in sorted(set(bicep) & set(sdk)):
        target = _deref(types, bicep[key]["type"])
        annotation = sdk[key].annotation
        literals, enum_values = _open_literals(types, target) or None, _sdk_enum(annotation)
        if literals is not None and enum_values is not None and literals != enum_values:
            extra_sdk, extra_bicep = sorted(enum_values - literals), sorted(literals - enum_values)
            out.append(f"{path}.{key}: enum only in SDK {extra_sdk}, only in bicep {extra_bicep}")
        sub = _sdk_model(annotation)
        if target.get("additionalProperties") and not target.get("properties"):  # a map: compare values
            values = [a for a in typing.get_args(annotation) if typing.get_origin(a) is dict]
            sub = _sdk_model(typing.get_args(values[0])[1]) if values else None
            target = _deref(types, target["additionalProperties"])
        if sub is not None and target.get("$type") in ("ObjectType", "DiscriminatedObjectType"):
            out += compare(types, target, sub, f"{path}.{key}", depth + 1)
    return out


def main(argv: list[str]) -> int:
    types = json.loads(Path(argv[1]).read_text())
    by_name = {t["name"].split("@")[0].lower(): t for t in types if t.get("$type") == "ResourceType"}
    for rtype, cls in RESOURCE_MODELS.items():
        resource = by_name.get(rtype)
        if resource is None:
            print(f"{rtype}: not in {argv[1]}")
            continue
        diffs = compare(types, _deref(types, resource["body"]), cls, rtype.rsplit("/", 1)[-1], 0)
        print(f"== {rtype}: {len(diffs)} difference(s)")
        for line in diffs:
            print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
