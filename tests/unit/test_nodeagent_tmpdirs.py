"""Containers' temporary folders: one per container run, writable by anyone, gone with the pod or fleet."""

import stat
from pathlib import Path

import pytest

from harness.localfleet.nodeagent import tmpdirs


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tmpdirs, "ROOT", tmp_path / "fleetdrill-tmp")
    return tmpdirs.ROOT


def test_each_container_of_a_pod_has_a_folder_anyone_may_write_to_as_in_tmp() -> None:
    first, second = tmpdirs.fresh("fd1-c0-n0-pabc", 0), tmpdirs.fresh("fd1-c0-n0-pabc", 1)
    assert first != second and first.is_dir() and second.is_dir()
    assert stat.S_IMODE(first.stat().st_mode) == 0o1777


def test_a_restarted_container_starts_with_an_empty_folder() -> None:
    (tmpdirs.fresh("fd1-c0-n0-pabc", 0) / "written").touch()
    again = tmpdirs.fresh("fd1-c0-n0-pabc", 0)
    assert again.is_dir() and not list(again.iterdir())


def test_removing_a_pod_removes_its_containers_folders_only(root: Path) -> None:
    (tmpdirs.fresh("fd1-c0-n0-pabc", 0) / "written").touch()
    kept = tmpdirs.fresh("fd1-c0-n0-pdef", 0)
    tmpdirs.remove("fd1-c0-n0-pabc")
    assert sorted(p.name for p in root.iterdir()) == ["fd1-c0-n0-pdef"] and kept.is_dir()


def test_taking_a_fleet_down_removes_its_pods_folders_not_another_fleets(root: Path) -> None:
    for sandbox in ("fd1-c0-n0-pabc", "fd1-c2-n1-pdef", "fd10-c0-n0-pabc"):
        (tmpdirs.fresh(sandbox, 0) / "written").touch()
    tmpdirs.remove_fleet("fd1-")
    assert [p.name for p in root.iterdir()] == ["fd10-c0-n0-pabc"]
    tmpdirs.remove_fleet("fd10-")
    assert not root.exists(), "the last fleet down removes the root too"
