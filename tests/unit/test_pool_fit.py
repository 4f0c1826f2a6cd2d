"""Pool fit (the Fits condition) and LRU residency: table tests of the pure decisions."""

from __future__ import annotations

import pytest

from slmfleet.pool.fit import Claim, fit, format_bytes, parse_bytes
from slmfleet.pool.lru import Resident, plan

GI = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6Gi", 6 * GI),
        ("1.5Gi", 3 * GI // 2),
        ("500M", 500_000_000),
        ("1e9", 10**9),
        ("4096", 4096),
        ("512Mi", 512 * 2**20),
    ],
)
def test_quantities(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "6GB", "-1Gi", "Gi", "1.2.3Gi"])
def test_bad_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        parse_bytes(bad)


@pytest.mark.parametrize(
    "huge", ["1e400", "1e999999999", "1e20", "9223372036854775808", "8Ei", "10E"]
)
def test_quantities_past_int64_are_refused_not_overflowed(huge: str) -> None:
    with pytest.raises(ValueError, match="more than 2\\^63 bytes"):
        parse_bytes(huge)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0e400", 0),
        ("9223372036854775807", 2**63 - 1),
        ("7Ei", 7 * 2**60),
        ("0.01e20", 10**18),  # a large exponent on a small mantissa is computed, not refused
        ("0.5e19", 5 * 10**18),
    ],
)
def test_quantities_up_to_int64(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (6 * GI, "6Gi"),
        (3 * GI // 2, "1.5Gi"),
        (100, "100"),
        (-3 * GI // 2, "-1.5Gi"),
        (2**40 + 2**40 // 20 - 1, "1Ti"),
        (10**400, f"{(10**401 + 2**39) // 2**40 // 10}Ti"),  # a float here overflowed
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def claims(*pairs: tuple[str, float | None]) -> list[Claim]:
    return [Claim(n, None if g is None else int(g * GI)) for n, g in pairs]


def test_members_that_fit_are_placed_with_the_arithmetic() -> None:
    f = fit("p", 24 * GI, claims(("a", 6), ("b", 4), ("c", 8)), overcommit=False)
    assert f.placed == ("a", "b", "c") and not f.refused
    assert (f.status, f.reason) == ("True", "Fits")
    assert f.message == "6Gi (a) + 4Gi (b) + 8Gi (c) = 18Gi of 24Gi"
    assert f.requested == 18 * GI


def test_a_member_larger_than_the_pool_is_refused_naming_the_field() -> None:
    f = fit("p", 8 * GI, claims(("a", 6), ("huge", 9)), overcommit=True)
    assert f.placed == ("a",)
    assert f.refused["huge"] == (
        "spec.serving.resources.memory: 9Gi is more than pool p's whole capacity of 8Gi"
    )
    assert (f.status, f.reason) == ("False", "MembersRefused")
    assert "huge" in f.message and "6Gi (a) of 8Gi" in f.message


def test_first_fit_in_joining_order_never_displaces_an_older_member() -> None:
    f = fit("p", 10 * GI, claims(("old", 6), ("new", 6), ("small", 4)), overcommit=False)
    assert f.placed == ("old", "small")
    assert "6Gi does not fit in pool p: 6Gi of 10Gi already placed, 4Gi left" in f.refused["new"]
    assert f.status == "False"


def test_overcommit_places_every_member_that_fits_alone() -> None:
    f = fit("p", 10 * GI, claims(("a", 6), ("b", 6), ("c", 4)), overcommit=True)
    assert f.placed == ("a", "b", "c") and not f.refused
    assert (f.status, f.reason) == ("True", "Overcommitted")
    assert f.message.startswith("6Gi (a) + 6Gi (b) + 4Gi (c) = 16Gi of 10Gi")


def test_an_undeclared_member_is_refused_with_its_problem() -> None:
    f = fit(
        "p",
        10 * GI,
        [Claim("a", GI), Claim("b", None, "spec.serving.resources.gpuMemory: required")],
        overcommit=False,
        field_path="spec.serving.resources.gpuMemory",
    )
    assert f.refused == {"b": "spec.serving.resources.gpuMemory: required"}
    assert f.placed == ("a",)


def test_an_empty_pool_fits() -> None:
    f = fit("p", GI, [], overcommit=False)
    assert (f.status, f.placed, f.message) == ("True", (), "no members: 0 of 1Gi")


def r(name: str, gi: float, loaded: bool, used: float | None = None, wanted: bool = False):
    return Resident(name, int(gi * GI), loaded, used, wanted)


@pytest.mark.parametrize(
    ("case", "members", "capacity", "unload", "load", "waiting"),
    [
        (
            "everything fits: all loaded, nothing unloaded",
            [r("a", 2, False), r("b", 2, False), r("c", 2, True)],
            8,
            (),
            ("a", "b"),
            (),
        ),
        (
            "cold wanted member evicts the least recently used idle one",
            [r("a", 4, True, 10), r("b", 4, True, 50), r("c", 4, False, None, True)],
            8,
            ("a",),
            ("c",),
            (),
        ),
        (
            "never used counts as least recently used",
            [r("a", 4, True, None), r("b", 4, True, 1), r("c", 4, False, None, True)],
            8,
            ("a",),
            ("c",),
            (),
        ),
        (
            "a busy member is never unloaded: the cold one waits",
            [r("a", 4, True, 10, True), r("b", 4, True, 50, True), r("c", 4, False, 0, True)],
            8,
            (),
            (),
            ("c",),
        ),
        (
            "a big cold member evicts as many idle ones as it needs, oldest first",
            [r("a", 2, True, 1), r("b", 2, True, 3), r("c", 2, True, 2), r("d", 4, False, 0, True)],
            6,
            ("a", "c"),
            ("d",),
            (),
        ),
        (
            "idle members stay loaded when no one needs the room",
            [r("a", 4, True, 1), r("b", 4, True, 2), r("c", 4, False, 0)],
            8,
            (),
            (),
            (),
        ),
        (
            "free room goes to the most recently used unloaded member first",
            [r("a", 4, False, 5), r("b", 4, False, 9), r("c", 4, True, 1)],
            8,
            (),
            ("b",),
            (),
        ),
        (
            "capacity shrank: idle members go until it fits",
            [r("a", 4, True, 1), r("b", 4, True, 2), r("c", 4, True, 3, True)],
            8,
            ("a",),
            (),
            (),
        ),
    ],
)
def test_residency_plan(case, members, capacity, unload, load, waiting) -> None:
    p = plan(members, capacity * GI)
    assert (p.unload, p.load, tuple(sorted(p.waiting))) == (unload, load, waiting), case


def test_a_waiting_member_names_the_busy_ones() -> None:
    p = plan([r("a", 4, True, 1, True), r("c", 6, False, 0, True)], 8 * GI)
    assert p.waiting["c"].endswith("busy members hold the pool: a")


def test_replaying_a_plan_reaches_a_fixed_point() -> None:
    """Applying a plan and planning again changes nothing (no flapping)."""
    members = [r("a", 3, True, 1), r("b", 3, True, 2), r("c", 3, False, 3, True), r("d", 1, False)]
    p = plan(members, 8 * GI)
    after = [
        Resident(m.name, m.bytes, (m.loaded or m.name in p.load) and m.name not in p.unload,
                 m.last_used, m.wanted)
        for m in members
    ]  # fmt: skip
    again = plan(after, 8 * GI)
    assert (again.unload, again.load) == ((), ())
    assert sum(m.bytes for m in after if m.loaded) <= 8 * GI
