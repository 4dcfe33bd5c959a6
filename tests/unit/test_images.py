"""The image catalogue: which argv a container runs, by Kubernetes' command/args rules."""

import sys

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
