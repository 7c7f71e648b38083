"""The planner: choosing tags, naming copies, merging, listing concurrently, rendering."""

from __future__ import annotations

import json
import logging
import random

import pytest

from mirrord.errors import Denied
from mirrord.model import CopyRequest, PlatformPolicy
from mirrord.plan import (
    Plan,
    RepoSelection,
    copies_for,
    list_repositories,
    merge,
    newest_first,
    plan,
    plan_listed,
    render_plan,
    select_tags,
)
from mirrord.refs import ImageReference
from mirrord.registry.options import RegistryOptions
from mirrord.semver import Constraint
from mirrord.tagregex import TagRegex
from tests.config.support import FakeRegistries

SRC = ImageReference("registry.example.com", "team/app")
DST = ImageReference("mirror.example.com", "m/app")
DIGEST = "sha256:" + "ab" * 32
TAGS = ["1.9.0", "1.10.0", "1.10.1-rc1", "2.0.0", "v2.1", "latest", "edge", "2.0.0-debug"]


def selection(**kw: object) -> RepoSelection:
    return RepoSelection(SRC, DST, **kw)  # type: ignore[arg-type]


class Config:
    """A PlanInput without a file behind it."""

    def __init__(self, *selections: RepoSelection) -> None:
        self.selections = selections

    def registry_options(self, host: str) -> RegistryOptions:
        return RegistryOptions(connections=1 if host == "registry.example.com" else 2)


def test_filters_are_a_union() -> None:
    chosen = select_tags(
        selection(tag_regexes=(TagRegex.compile("^v"),), constraints=(Constraint.parse("~1.10"),)),
        TAGS,
    )
    assert chosen == ("1.10.0", "v2.1")
    assert select_tags(selection(all_tags=True), TAGS) == tuple(sorted(TAGS))
    assert select_tags(selection(tags=("latest",)), TAGS) == ()


def test_exclude_then_keep_latest() -> None:
    chosen = select_tags(
        selection(all_tags=True, exclude=TagRegex.compile("-(rc|debug)"), keep_latest=3), TAGS
    )
    assert chosen == ("1.10.0", "2.0.0", "v2.1")


def test_newest_first_ranks_versions_above_other_tags() -> None:
    assert newest_first(["latest", "1.9", "1.10", "edge", "v1.10.0", "1.10.0-rc1"]) == [
        "v1.10.0",
        "1.10",
        "1.10.0-rc1",
        "1.9",
        "latest",
        "edge",
    ]


def test_invalid_listed_tags_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    chosen = select_tags(selection(all_tags=True), ["ok", "-bad", "x" * 200, "ok"])
    assert chosen == ("ok",)
    assert "skipping listed tag '-bad': not a valid tag" in caplog.text


def test_copies_name_tags_digests_and_pins() -> None:
    requests = copies_for(
        selection(
            tags=("1.9.0",),
            digests=(DIGEST,),
            pinned=(("stable", DIGEST),),
            constraints=(Constraint.parse(">=2"),),
            suffix="-m",
            immutable=TagRegex.compile(r"^\d"),
            source_name="s",
        ),
        TAGS,
    )
    assert [(str(r.source), str(r.destination), r.immutable) for r in requests] == [
        (f"{SRC}:1.9.0", f"{DST}:1.9.0-m", True),
        (f"{SRC}:2.0.0", f"{DST}:2.0.0-m", True),
        (f"{SRC}:v2.1", f"{DST}:v2.1-m", False),
        (f"{SRC}:stable@{DIGEST}", f"{DST}:stable-m", False),
        (f"{SRC}@{DIGEST}", f"{DST}@{DIGEST}", True),
    ]
    assert {r.source_name for r in requests} == {"s"}


def test_a_suffix_that_makes_a_listed_tag_too_long_skips_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    long_tag = "t" * 127
    requests = copies_for(selection(all_tags=True, suffix="-mirror"), [long_tag, "1"])
    assert [r.destination.tag for r in requests] == ["1-mirror"]
    assert "is not a valid tag" in caplog.text


def test_the_same_destination_is_planned_once() -> None:
    a = selection(tags=("1",), source_name="a")
    b = selection(all_tags=True, source_name="b")
    result = plan_listed([a, b, a], {SRC: ["1", "2"]})
    assert [str(r.destination) for r in result.requests] == [f"{DST}:1", f"{DST}:2"]
    assert result.conflicts == ()


def test_two_sources_for_one_destination_is_a_conflict(caplog: pytest.LogCaptureFixture) -> None:
    other = ImageReference("quay.io", "other/app")
    first = RepoSelection(SRC, DST, tags=("1",), source_name="a")
    second = RepoSelection(other, DST, tags=("1",), source_name="b")
    result = plan_listed([second, first], {})
    assert [str(r.source) for r in result.requests] == [f"{other}:1"]
    assert result.conflicts == (
        f"{DST}:1: selected from {other}:1 (b) and {SRC}:1 (a); copying from {other}:1",
    )
    assert result.conflicts[0] in caplog.text


def test_order_is_deterministic() -> None:
    selections = [
        RepoSelection(
            ImageReference("r.example.com", f"ns/app{i}"),
            ImageReference("m.example.com", f"app{i}"),
            all_tags=True,
        )
        for i in range(20)
    ]
    listings = {s.source: [f"{n}.0" for n in range(10)] for s in selections}
    first = plan_listed(selections, listings).requests
    random.Random(7).shuffle(selections)
    assert plan_listed(selections, listings).requests == first
    assert [r.key for r in first] == sorted(r.key for r in first)


def test_merge_prefers_the_first_in_sorted_order() -> None:
    a = CopyRequest(SRC.with_tag("1"), DST.with_tag("1"), PlatformPolicy.all(), "a")
    b = CopyRequest(SRC.with_tag("1"), DST.with_tag("1"), PlatformPolicy.system(), "b")
    merged, conflicts = merge([b, a])
    assert merged == (a,)
    assert len(conflicts) == 1


async def test_listing_is_bounded_and_once_per_repository() -> None:
    repos = [ImageReference("registry.example.com", f"r{i}") for i in range(12)]
    registries = FakeRegistries({r.name: ["1"] for r in repos}, delay=0.01)
    result = await list_repositories(
        [*repos, *repos], registries, Config().registry_options, limit=3
    )
    assert registries.peak == 3
    assert len(registries.calls) == 12
    assert all(v == ["1"] for v in result.values())
    assert {o.connections for _, o in registries.calls} == {1}


async def test_listing_failures_are_values() -> None:
    missing = RepoSelection(
        ImageReference("registry.example.com", "gone"), DST, all_tags=True, tags=("keep",)
    )
    denied_repo = ImageReference("registry.example.com", "secret")
    denied = RepoSelection(
        denied_repo, ImageReference("mirror.example.com", "secret"), all_tags=True
    )
    fine = selection(all_tags=True)
    registries = FakeRegistries({SRC.name: ["1"]}, failures={denied_repo.name: Denied("denied")})
    result = await plan(Config(missing, denied, fine), registries)
    assert isinstance(result, Plan)
    assert [(f.repository.name, f.error.reason) for f in result.failures] == [
        ("registry.example.com/gone", "name_unknown"),
        ("registry.example.com/secret", "denied"),
    ]
    assert [str(r.destination) for r in result.requests] == [f"{DST}:1", f"{DST}:keep"]
    assert str(result.failures[1]) == "registry.example.com/secret: listing tags failed: denied"


async def test_bugs_in_the_lister_are_not_swallowed() -> None:
    async def broken(repository: ImageReference, options: RegistryOptions) -> list[str]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await plan(Config(selection(all_tags=True)), broken)


def test_render_plan_table_and_json() -> None:
    requests = copies_for(selection(tags=("1.9.0", "latest")))
    table = render_plan(requests)
    assert table.splitlines() == [
        f"{SRC}:1.9.0   ->  {DST}:1.9.0   all",
        f"{SRC}:latest  ->  {DST}:latest  all",
        "2 copies",
    ]
    assert json.loads(render_plan(requests, as_json=True))[0] == {
        "source": f"{SRC}:1.9.0",
        "destination": f"{DST}:1.9.0",
        "platforms": {"mode": "all", "platforms": []},
        "source_name": "",
        "immutable": False,
    }
    assert render_plan(()) == "nothing to copy"


def test_logging_of_planning_is_quiet_when_all_is_well(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mirrord.plan")
    plan_listed([selection(all_tags=True)], {SRC: TAGS})
    assert caplog.records == []
