"""The CronJob example's manifests (namespace, least-privilege RBAC, the CronJob) are accepted by a real
API server (server-side dry run: nothing is created but the namespace)."""

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "examples" / "cronjob.yaml"


def test_the_cronjob_example_is_valid_for_the_api_server(kubectl: Callable[..., CompletedProcess]) -> None:
    created = kubectl("us-east", "create", "namespace", "fleetdrill", check=False)
    assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
    done = kubectl("us-east", "apply", "--dry-run=server", "-f", "-", stdin=EXAMPLE.read_text())
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(EXAMPLE.read_text())]
    accepted = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(names), done.stdout
    assert any(line.startswith("cronjob.batch/fleetdrill-quarterly ") for line in accepted), done.stdout
