"""The image catalogue: which argv a container runs, by Kubernetes' command/args rules."""

import signal
import sys
from pathlib import Path

import pytest

from harness.errors import FleetDrillError
from harness.localfleet import supervisor
from harness.localfleet.nodeagent import images
from harness.localfleet.nodeagent.env import expand_all
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


def _postgres_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *majors: int) -> Path:
    """A Debian-like /usr/lib/postgresql with a server of each major version."""
    for major in majors:
        (tmp_path / str(major) / "bin").mkdir(parents=True)
        for program in ("postgres", "pg_isready"):
            (tmp_path / str(major) / "bin" / program).touch(mode=0o755)
    monkeypatch.setattr(images, "POSTGRES_ROOT", tmp_path)
    return tmp_path


def test_the_postgres_image_runs_its_entrypoint_with_the_servers_bin_folder_first_on_path(
    tmp_path, monkeypatch
) -> None:
    root = _postgres_root(tmp_path, monkeypatch, 15, 16)
    resolved = resolve("postgres:15", [], ["-c", "max_connections=50"])
    entrypoint = [sys.executable, "-m", "harness.localfleet.pgentrypoint"]
    assert resolved.argv == [*entrypoint, "-c", "max_connections=50"] and not resolved.note
    assert resolved.env["PATH"].split(":")[0] == str(root / "15" / "bin")
    assert resolved.env["PGDATA"] == "/var/lib/postgresql/data" and resolved.env["PG_MAJOR"] == "15"
    assert resolved.stop_signal == signal.SIGINT, "the image's STOPSIGNAL: fast shutdown"
    assert resolve("busybox", [], ["sleep", "1"]).stop_signal == signal.SIGTERM
    assert resolve("docker.io/library/postgres:16.4-bookworm", [], []).env["PG_MAJOR"] == "16"
    assert resolve("postgres", [], []).env["PG_MAJOR"] == "16", "no tag: the newest installed"
    explicit = resolve("postgres:15-alpine", ["docker-entrypoint.sh"], ["postgres"]).argv
    assert explicit == [*entrypoint, "postgres"]


def test_a_postgres_command_other_than_the_entrypoint_runs_as_it_is(tmp_path, monkeypatch) -> None:
    _postgres_root(tmp_path, monkeypatch, 15)
    assert resolve("postgres:15", ["pg_isready"], ["-U", "postgres"]).argv == ["pg_isready", "-U", "postgres"]
    missing = resolve("postgres:15", ["pgbouncer"], [])
    assert missing.argv == IDLE and "'pgbouncer' is not available here" in missing.note


def test_a_postgres_version_not_installed_here_says_which_are(tmp_path, monkeypatch) -> None:
    _postgres_root(tmp_path, monkeypatch, 15)
    for tag, wanted in (("14", "PostgreSQL 14"), ("17.2", "PostgreSQL 17")):
        resolved = resolve(f"postgres:{tag}", [], [])
        assert resolved.argv == IDLE and f"{wanted} is not installed here (installed: 15;" in resolved.note
    _postgres_root(tmp_path / "empty", monkeypatch)
    assert "PostgreSQL is not installed here (installed: none;" in resolve("postgres:latest", [], []).note


def test_prometheus_image_runs_the_built_server_with_the_image_cmd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(images.PROMETHEUS_BIN_ENV, "/cache/prometheus-v0.316.0")
    server = "/cache/prometheus-v0.316.0/prometheus"
    resolved = resolve("prom/prometheus:v3.16.0", [], [])
    assert resolved.argv == [server, *images.PROMETHEUS_ARGS] and resolved.own_folder
    assert resolve("quay.io/prometheus/prometheus", [], ["--config.file=/c.yml"]).argv == [
        server,
        "--config.file=/c.yml",
    ]
    assert resolve("prom/prometheus", ["/bin/prometheus"], ["--version"]).argv == [server, "--version"]
    assert resolve("prom/prometheus", ["/bin/promtool"], []).argv == images.IDLE
    monkeypatch.delenv(images.PROMETHEUS_BIN_ENV)
    assert "fleet up --prometheus" in resolve("prom/prometheus:latest", [], []).note


def test_command_and_args_expand_the_containers_environment_as_the_kubelet_does() -> None:
    env = {"MODE": "on", "NAMES": ""}
    parts = [
        "-c",
        "synchronous_commit=$(MODE)",
        "-c",
        "synchronous_standby_names=$(NAMES)",
        "$$(MODE)",
        "$(NONE)",
    ]
    assert expand_all(parts, env) == [
        "-c", "synchronous_commit=on", "-c", "synchronous_standby_names=", "$(MODE)", "$(NONE)"
    ]  # fmt: skip


def test_metrics_server_image_runs_the_built_server_with_the_pods_args(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(images.METRICS_SERVER_BIN_ENV, "/cache/metrics-server-v0.9.0")
    server = "/cache/metrics-server-v0.9.0/metrics-server"
    image = "registry.k8s.io/metrics-server/metrics-server:v0.9.0"
    assert resolve(image, [], ["--secure-port=4443"]).argv == [server, "--secure-port=4443"]
    assert resolve(image, ["/metrics-server"], ["--version"]).argv == [server, "--version"]
    assert resolve(image, ["/bin/sh"], []).argv == images.IDLE
    monkeypatch.delenv(images.METRICS_SERVER_BIN_ENV)
    assert "fleet up --metrics-server" in resolve(image, [], []).note
