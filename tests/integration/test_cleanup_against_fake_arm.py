"""The integration suite's own Azure calls, checked where they can run: against the fake ARM.

A run creates its resource group with run id / creation time / max age tags; ``genaiops cleanup``
lists groups by that tag and deletes only the expired ones, each through ARM's long-running
delete (202 + Location/Azure-AsyncOperation, polled until the group is gone). Not marked
``integration``: this part runs in ``make test``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from release.azure import testgroups
from release.azure.clients import AzureContext
from release.errors import UserError
from tests.azure.fake_arm import FakeAzure, StaticCredential

SUB = "3f2c1a9e-0b1d-4c55-9a77-1e2d3c4b5a69"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeAzure:
    return FakeAzure()


@pytest.fixture
def ctx(fake: FakeAzure) -> AzureContext:
    return AzureContext(
        subscription_id=SUB,
        tenant_id="7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        resource_group="unused",
        workspace="unused",
        location="westeurope",
        credential=StaticCredential(),
        transport=fake.transport(),
    )


def rg_key(name: str) -> str:
    return f"/subscriptions/{SUB}/resourcegroups/{name}".lower()


def test_run_group_is_created_with_its_tags(fake: FakeAzure, ctx: AzureContext) -> None:
    name = testgroups.group_name("gaops", "20261130-4")
    group = testgroups.create(
        ctx, name, "20261130-4", timedelta(hours=6), tags={"owner": "platform-team"}, now=NOW
    )
    [put] = fake.find("PUT", r"/resourcegroups/gaops-it-20261130-4-rg$")
    assert put.api_version == "2025-04-01"
    assert put.body == {
        "location": "westeurope",
        "tags": {
            "owner": "platform-team",
            "genaiops-run-id": "20261130-4",
            "genaiops-created-at": "2026-11-30T12:00:00Z",
            "genaiops-max-age-hours": "6",
        },
    }
    assert group.expired(NOW + timedelta(hours=6)) and not group.expired(NOW + timedelta(hours=5))


def test_cleanup_deletes_only_expired_test_groups(fake: FakeAzure, ctx: AzureContext) -> None:
    testgroups.create(ctx, "gaops-it-old-rg", "old", timedelta(hours=6), now=NOW - timedelta(hours=7))
    testgroups.create(ctx, "gaops-it-new-rg", "new", timedelta(hours=6), now=NOW - timedelta(hours=1))
    testgroups.create(ctx, "gaops-it-long-rg", "long", timedelta(hours=48), now=NOW - timedelta(hours=7))
    fake.put_resource(
        f"/subscriptions/{SUB}/resourceGroups/gaops-dev-rg",
        {"location": "westeurope", "tags": {"environment": "dev"}},
    )
    fake.lro_polls = 2

    removed = testgroups.cleanup(ctx, now=NOW)

    assert [g.name for g in removed] == ["gaops-it-old-rg"]
    [listing] = fake.find("GET", r"/resourcegroups$")
    assert listing.query["$filter"] == "tagName eq 'genaiops-run-id'"
    [delete] = fake.find("DELETE", r"/resourcegroups/")
    assert delete.path.endswith("/resourcegroups/gaops-it-old-rg") and delete.status == 202
    polls = [c for c in fake.calls[fake.calls.index(delete) :] if "/operationStatuses/" in c.path]
    assert len(polls) >= 3  # the SDK waited for the long-running delete to finish
    assert rg_key("gaops-it-old-rg") not in fake.store
    for kept in ("gaops-it-new-rg", "gaops-it-long-rg", "gaops-dev-rg"):  # untagged groups: never
        assert rg_key(kept) in fake.store


def test_older_than_overrides_each_groups_max_age(fake: FakeAzure, ctx: AzureContext) -> None:
    testgroups.create(ctx, "gaops-it-a-rg", "a", timedelta(hours=48), now=NOW - timedelta(hours=3))
    testgroups.create(ctx, "gaops-it-b-rg", "b", timedelta(hours=48), now=NOW - timedelta(hours=1))
    assert [
        g.name
        for g in testgroups.cleanup(ctx, older_than=testgroups.parse_duration("2h"), now=NOW, dry_run=True)
    ] == ["gaops-it-a-rg"]
    assert fake.find("DELETE", ".") == []  # dry run
    assert [g.name for g in testgroups.cleanup(ctx, older_than=timedelta(hours=2), now=NOW)] == [
        "gaops-it-a-rg"
    ]
    assert rg_key("gaops-it-a-rg") not in fake.store and rg_key("gaops-it-b-rg") in fake.store


def test_a_failed_delete_is_reported(fake: FakeAzure, ctx: AzureContext) -> None:
    testgroups.create(ctx, "gaops-it-x-rg", "x", timedelta(hours=1), now=NOW - timedelta(hours=2))
    fake.on(
        "DELETE",
        r"/resourcegroups/gaops-it-x-rg$",
        lambda c: (409, {"error": {"code": "ScopeLocked", "message": "The scope is locked."}}),
    )
    with pytest.raises(UserError, match="delete resource group gaops-it-x-rg: HTTP 409 ScopeLocked"):
        testgroups.cleanup(ctx, now=NOW)


@pytest.mark.parametrize("text", ["6", "six hours", "6w", "-1h"])
def test_bad_durations_and_run_ids_are_refused(text: str) -> None:
    with pytest.raises(UserError, match="--older-than"):
        testgroups.parse_duration(text)
    with pytest.raises(UserError, match="run id"):
        testgroups.group_name("gaops", "Build 42")


def test_cleanup_command_refuses_a_bad_duration_before_any_call(capsys: pytest.CaptureFixture[str]) -> None:
    from release.cli import main

    assert main(["cleanup", "--env", "dev", "--older-than", "6x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["genaiops: error: --older-than '6x': use a number and a unit m, h or d (e.g. 6h)"]
