"""Shared pytest configuration; fixtures live in tests/fixtures by the real part they start."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.triton",
    "tests.fixtures.hostile",
    "tests.fixtures.redis",
    "tests.fixtures.postgres",
    "tests.fixtures.jaeger",
]

#: Skips that are right even in CI, with the reason they are right (none today).
ALLOWED_SKIPS: tuple[str, ...] = ()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (SLMFLEET_REQUIRE_ALL=1) a skipped suite is a failure, not a pass."""
    if not os.environ.get("SLMFLEET_REQUIRE_ALL"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    unexpected = [r for r in skipped if not any(a in str(r.longrepr) for a in ALLOWED_SKIPS)]
    if unexpected:
        for report in unexpected:
            print(f"\nSLMFLEET_REQUIRE_ALL: skipped {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
