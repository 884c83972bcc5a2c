"""Polyframe's test support: helpers and a pytest plugin (``polyframe_testing.plugin``,
registered by entry point) shared by every test suite of the workspace. Imported by tests
only; no runtime package depends on it."""

import pytest

pytest.register_assert_rewrite(
    "polyframe_testing.databases",
    "polyframe_testing.isolation",
    "polyframe_testing.plugin",
    "polyframe_testing.problems",
    "polyframe_testing.telemetry",
)
