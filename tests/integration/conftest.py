"""Fixtures of the integration tests that more than one module uses, each module getting its own."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from harness.config import Fleet, load_fleet
from tests.conftest import started_fleet

VELERO_CLUSTERS = ("us-east", "eu-west")


@pytest.fixture(scope="module")
def drill_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    """A three-cluster fleet of the module's own, without backups: its drills break it."""
    with started_fleet(tmp_path_factory, "drill-fleet") as folder:
        yield folder


@pytest.fixture(scope="module")
def velero_dir(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    """A two-cluster fleet of the module's own with the backup store and Velero: us-east active (its
    storage location ReadWrite), eu-west a DR target (ReadOnly). The Velero modules each get one."""
    with started_fleet(tmp_path_factory, "velero", clusters=2, backups=True) as started:
        yield started


@pytest.fixture(scope="module")
def velero_fleet(velero_dir: Path) -> Fleet:
    return load_fleet(velero_dir / "fleet.yaml")


@pytest.fixture(scope="module")
def velero_core(velero_dir: Path) -> Iterator[dict[str, client.CoreV1Api]]:
    """The core API of each cluster of the Velero fleet, by name."""
    apis = {
        name: config.new_client_from_config(str(velero_dir / "kubeconfig"), context=name)
        for name in VELERO_CLUSTERS
    }
    yield {name: client.CoreV1Api(api) for name, api in apis.items()}
    for api in apis.values():
        api.close()
