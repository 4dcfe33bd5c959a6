"""Fixtures the unit tests share."""

from tests.httpserver import servers  # noqa: F401 (a fixture)
