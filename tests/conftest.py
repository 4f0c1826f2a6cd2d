"""Shared pytest configuration; fixtures live in tests/fixtures by the real part they start."""

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.triton",
]
