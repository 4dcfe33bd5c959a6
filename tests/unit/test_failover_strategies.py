"""The failover strategies a fleet file picks per app: command runs the user's script with its
placeholders filled in, timed on the timeline; observe only records that the fleet fails over by itself."""

import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiException

from harness import failover
from harness.config import load_fleet
from harness.fleet import FleetAccess
from harness.infra.command import CommandError
from harness.timeline import Timeline

WRITE_ARGS = "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))"


def access_with(tmp_path: Path, strategy: dict) -> FleetAccess:
    document = {
        "name": "unit",
        "clusters": [
            {"name": "east", "region": "us-east", "role": "active"},
            {"name": "west", "region": "eu-west", "role": "passive", "context": "ctx-west"},
        ],
        "apps": [
            {"name": "shop", "namespace": "shop-ns", "workload": "deployment/shop", "failover": strategy}
        ],
    }
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(document))
    return FleetAccess(load_fleet(tmp_path / "fleet.yaml"))


def test_the_command_strategy_runs_the_script_with_its_placeholders(tmp_path: Path) -> None:
    out = tmp_path / "args"
    command = [sys.executable, "-c", WRITE_ARGS, str(out), "{app}", "{namespace}", "{cluster}", "{context}"]
    access, timeline = access_with(tmp_path, {"strategy": "command", "command": command}), Timeline()
    failover.fail_over(access, access.fleet.app("shop"), "west", timeline)
    assert out.read_text() == "shop shop-ns west ctx-west"
    names = [e.name for e in timeline.events()]
    assert names == ["failover command.start", "failover command.end", "failover.commanded"]
    assert timeline.events("failover.commanded")[0].detail == {"program": sys.executable}


def test_a_failing_command_is_one_line_with_its_stderr(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; sys.exit('no route to the DNS API')"]
    access = access_with(tmp_path, {"strategy": "command", "command": command, "timeout": "10s"})
    with pytest.raises(CommandError) as caught:
        failover.fail_over(access, access.fleet.app("shop"), "west", Timeline())
    message = str(caught.value)
    assert message.startswith("apps.shop.failover.command: `") and "\n" not in message
    assert message.endswith("exited 1: no route to the DNS API")


def test_the_observe_strategy_only_records(tmp_path: Path) -> None:
    access, timeline = access_with(tmp_path, {"strategy": "observe"}), Timeline()
    failover.fail_over(access, access.fleet.app("shop"), "west", timeline)
    assert [(e.name, e.cluster) for e in timeline.events()] == [("failover.observed", "west")]


class Gslbs:
    """A CustomObjectsApi holding Gslbs under the API groups given: any other group answers 404."""

    def __init__(self, *groups: str, status: int = 404) -> None:
        self.groups, self.status, self.patched = groups, status, []

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, *args, **kwargs):
        if group not in self.groups:
            raise ApiException(status=self.status)
        self.patched.append((group, version, namespace, *args[:2]))


def test_the_gslb_is_patched_under_k8gb_s_api_group_else_the_legacy_one(tmp_path: Path) -> None:
    """k8gb moved to k8gb.io (k8gb-io/k8gb#2203); k8gb.absa.oss is served until users migrate, and a migrated
    legacy object is read-only: the canonical group first, the legacy one where the canonical has none."""
    app = access_with(tmp_path, {"strategy": "promote"}).fleet.app("shop")
    patch = {"spec": {"strategy": {"primaryGeoTag": "west"}}}
    migrated = Gslbs("k8gb.io", "k8gb.absa.oss")
    assert failover.patch_gslb(migrated, app, patch) == "k8gb.io"
    assert migrated.patched == [("k8gb.io", "v1beta1", "shop-ns", "gslbs", "shop")]
    legacy = Gslbs("k8gb.absa.oss")
    assert failover.patch_gslb(legacy, app, patch) == "k8gb.absa.oss"
    with pytest.raises(
        failover.FailoverError, match=r"no Gslb shop-ns/shop in API group k8gb.io or k8gb.absa.oss"
    ):
        failover.patch_gslb(Gslbs(), app, patch)
    with pytest.raises(ApiException):  # forbidden is an answer, not a missing group
        failover.patch_gslb(Gslbs(status=403), app, patch)
