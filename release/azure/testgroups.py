"""Resource groups of integration runs: created with a run id and a maximum age in their tags,
found again by tag, deleted when expired (a failed run leaves its group behind; cleanup removes it).

Tags (ARM tag names and values are strings):
``genaiops-run-id``        the run that created the group (e.g. the pipeline's build id);
``genaiops-created-at``    UTC creation time, ISO 8601 (``2026-11-30T06:00:00Z``);
``genaiops-max-age-hours`` after how many hours cleanup may delete it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from release.azure.clients import AzureContext, call, wait_lro
from release.errors import UserError

RUN_TAG = "genaiops-run-id"
CREATED_TAG = "genaiops-created-at"
MAX_AGE_TAG = "genaiops-max-age-hours"
DELETE_TIMEOUT_S = 1800.0  # deleting a group with a workspace takes minutes; bounded
_RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_DURATION_RE = re.compile(r"^(\d+)\s*([mhd])$")


@dataclass(frozen=True)
class TestGroup:
    name: str
    run_id: str
    created_at: datetime
    max_age: timedelta

    def expired(self, now: datetime, older_than: timedelta | None = None) -> bool:
        return now - self.created_at >= (older_than if older_than is not None else self.max_age)


def parse_duration(text: str) -> timedelta:
    """``90m``, ``6h``, ``2d`` -> timedelta; UserError naming the format otherwise."""
    match = _DURATION_RE.match(text.strip().lower())
    if not match:
        raise UserError(f"--older-than {text!r}: use a number and a unit m, h or d (e.g. 6h)")
    value, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=value), "h": timedelta(hours=value), "d": timedelta(days=value)}[unit]


def group_name(prefix: str, run_id: str) -> str:
    if not _RUN_ID_RE.match(run_id):
        raise UserError(f"run id {run_id!r}: use 1-40 lowercase letters, digits or '-'")
    return f"{prefix}-it-{run_id}-rg"


def _client(ctx: AzureContext) -> Any:
    from azure.mgmt.resource.resources import ResourceManagementClient

    return ResourceManagementClient(ctx.credential, ctx.subscription_id, **ctx.sdk_kwargs())


def create(
    ctx: AzureContext,
    name: str,
    run_id: str,
    max_age: timedelta,
    tags: dict[str, str] | None = None,
    now: datetime | None = None,
) -> TestGroup:
    """Create (or update) the run's resource group with its tags."""
    from azure.mgmt.resource.resources.models import ResourceGroup

    created = (now or datetime.now(UTC)).replace(microsecond=0)
    all_tags = {
        **(tags or {}),
        RUN_TAG: run_id,
        CREATED_TAG: created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        MAX_AGE_TAG: str(int(max_age.total_seconds() // 3600) or 1),
    }
    client = _client(ctx)
    call(
        f"create resource group {name}",
        lambda: client.resource_groups.create_or_update(
            name, ResourceGroup(location=ctx.location, tags=all_tags)
        ),
    )
    return TestGroup(name, run_id, created, max_age)


def _parse(group: Any) -> TestGroup | None:
    tags = group.tags or {}
    if RUN_TAG not in tags:
        return None
    try:
        created = datetime.strptime(tags[CREATED_TAG], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        max_age = timedelta(hours=int(tags[MAX_AGE_TAG]))
    except (KeyError, ValueError):
        created, max_age = datetime.fromtimestamp(0, UTC), timedelta(0)  # unreadable tags: expired
    return TestGroup(group.name, tags[RUN_TAG], created, max_age)


def list_groups(ctx: AzureContext) -> list[TestGroup]:
    """Every resource group carrying the run tag (ARM filters by tag name; checked again here)."""
    client = _client(ctx)
    groups = call(
        "list resource groups", lambda: list(client.resource_groups.list(filter=f"tagName eq '{RUN_TAG}'"))
    )
    return [g for g in (_parse(group) for group in groups) if g is not None]


def delete(ctx: AzureContext, name: str, timeout_s: float = DELETE_TIMEOUT_S) -> None:
    """Delete one group and wait (bounded) for the long-running operation to end."""
    client = _client(ctx)
    poller = call(f"delete resource group {name}", lambda: client.resource_groups.begin_delete(name))
    wait_lro(poller, f"delete resource group {name}", timeout_s)


def cleanup(
    ctx: AzureContext,
    older_than: timedelta | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[TestGroup]:
    """Delete the expired test groups; returns them. Groups without the run tag are never touched."""
    moment = now or datetime.now(UTC)
    expired = [g for g in list_groups(ctx) if g.expired(moment, older_than)]
    if not dry_run:
        for group in expired:
            delete(ctx, group.name)
    return expired
