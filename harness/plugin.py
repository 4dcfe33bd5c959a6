"""pytest glue for fleetdrill: options, markers, fixtures and hooks only (entry point pytest11)."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fleetdrill", "fleetdrill DR drills")
    group.addoption("--fleet", metavar="PATH", help="fleet file (fleet.yaml) of the fleet to drill")
    parser.addini("fleet", "fleet file (fleet.yaml) of the fleet to drill", default="")
