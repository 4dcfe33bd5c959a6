"""The image catalogue: which argv a container runs, by Kubernetes' command/args rules."""

import sys
from pathlib import Path

import pytest

from harness.errors import FleetDrillError
from harness.localfleet import supervisor
from harness.localfleet.nodeagent import images
from harness.localfleet.nodeagent.images import IDLE, resolve


def test_args_without_a_command_run_as_the_argv_of_an_image_with_no_entrypoint() -> None:
    assert resolve("busybox:1.36", [], ["sleep", "30"]).argv == ["sleep", "30"]


def test_a_command_replaces_the_entrypoint_and_args_follow_it() -> None:
    assert resolve("debian:12", ["sh", "-c"], ["exit 3"]).argv == ["sh", "-c", "exit 3"]


def test_a_program_this_machine_lacks_runs_the_idle_process_and_says_so() -> None:
    resolved = resolve("nginx:1.27", [], ["-g", "daemon off;"])
    assert resolved.argv == IDLE and "'-g' is not available here" in resolved.note
    bare = resolve("nginx:1.27", [], [])
    assert bare.argv == IDLE and "not in the catalogue" in bare.note


def test_the_sample_app_image_runs_the_sample_app_with_its_args() -> None:
    argv = resolve("fleetdrill.io/orders:1", [], ["--port", "8080"]).argv
    assert argv == [sys.executable, "-m", "harness.localfleet.sampleapp", "--port", "8080"]


def test_a_stress_image_runs_debians_program_of_its_entrypoint_in_a_folder_of_its_own(monkeypatch) -> None:
    monkeypatch.setattr(images, "missing_programs", list)
    ng = resolve("alexeiled/stress-ng:latest", [], ["--cpu", "1"])
    assert ng.argv == ["/usr/bin/stress-ng", "--cpu", "1"] and ng.own_folder and not ng.note
    assert resolve("docker.io/progrium/stress", [], ["--vm", "1"]).argv == ["/usr/bin/stress", "--vm", "1"]
    command = resolve("polinux/stress", ["stress"], ["--vm", "1", "--vm-hang", "0"]).argv
    assert command == ["/usr/bin/stress", "--vm", "1", "--vm-hang", "0"]
    ours = resolve("fleetdrill.io/stress", ["/usr/bin/stress-ng", "--cpu"], ["2"]).argv
    assert ours == ["/usr/bin/stress-ng", "--cpu", "2"]


def test_a_stress_image_runs_nothing_but_stress_and_says_what_is_missing(monkeypatch) -> None:
    other = resolve("polinux/stress", ["sh", "-c"], ["sleep 1"])
    assert other.argv == IDLE and "only stress and stress-ng run here, not 'sh'" in other.note
    monkeypatch.setitem(images.STRESS_PROGRAMS, "stress-ng", Path("/nonexistent/stress-ng"))
    missing = resolve("alexeiled/stress-ng", [], ["--cpu", "1"])
    assert (
        missing.argv == IDLE
        and "stress-ng is not installed here (Debian's stress-ng package)" in missing.note
    )
    assert images.missing_programs() == ["stress-ng"]


def test_the_fleet_says_which_debian_package_to_install_when_stress_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(images, "missing_programs", lambda: ["stress", "stress-ng"])
    with pytest.raises(
        FleetDrillError, match=r"stress and stress-ng missing: .*\(apt-get install stress stress-ng"
    ):
        supervisor.check_programs()
