"""The local fleet runs real Kubernetes control planes: drive them with unmodified clients."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chaosk8s.deployment.actions import scale_deployment
from chaosk8s.pod.probes import count_pods
from kubernetes import client
from kubernetes.config import kube_config

from harness.config import load_fleet
from harness.localfleet import netns, registry, supervisor
from harness.localfleet.nodeagent import tmpdirs
from harness.localfleet.state import FleetState
from tests.conftest import own, run_cli, wait_for

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
"""


def test_fleet_file_and_kubeconfig_describe_every_cluster(fleet_dir: Path) -> None:
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    assert [c.name for c in fleet.clusters] == ["us-east", "eu-west", "ap-south"]
    assert [c.region for c in fleet.clusters] == ["us-east", "eu-west", "ap-south"]
    assert fleet.primary().name == "us-east"
    kubeconfig = yaml.safe_load((fleet_dir / "kubeconfig").read_text())
    contexts = {c["name"] for c in kubeconfig["contexts"]}
    assert contexts == {
        "us-east",
        "eu-west",
        "ap-south",
        "us-east-readonly",
        "eu-west-readonly",
        "ap-south-readonly",
    }
    assert (fleet_dir / "kubeconfig").stat().st_mode & 0o077 == 0, "the kubeconfig names keys: owner only"
    for entry in kubeconfig["users"]:  # inline keys: the kubernetes client copies them to /tmp files
        assert set(entry["user"]) == {"client-certificate", "client-key"}, entry["name"]
        assert all(Path(path).is_file() for path in entry["user"].values()), entry["name"]


def test_kubectl_crud_of_a_deployment(kubectl) -> None:
    assert "kube-system" in kubectl("us-east", "get", "ns").stdout
    kubectl("us-east", "apply", "-f", "-", stdin=DEPLOYMENT)
    try:
        spec = yaml.safe_load(kubectl("us-east", "get", "deploy", "web", "-o", "yaml").stdout)
        assert spec["spec"]["replicas"] == 2
        kubectl("us-east", "scale", "deploy/web", "--replicas=3")
        scaled = json.loads(kubectl("us-east", "get", "deploy", "web", "-o", "json").stdout)
        assert scaled["spec"]["replicas"] == 3
    finally:
        kubectl("us-east", "delete", "deploy", "web", "--wait=false")
    assert "NotFound" in kubectl("us-east", "get", "deploy", "web", check=False).stderr


def test_deployment_becomes_replicaset_and_pods_the_scheduler_cannot_place(api) -> None:
    """Real controllers and scheduler: with no node fitting, the pods stay Pending with FailedScheduling."""
    apps, core = client.AppsV1Api(api("eu-west")), client.CoreV1Api(api("eu-west"))
    unplaceable = yaml.safe_load(DEPLOYMENT)
    unplaceable["spec"]["template"]["spec"]["nodeSelector"] = {"topology.kubernetes.io/zone": "nowhere"}
    apps.create_namespaced_deployment("default", unplaceable)
    try:
        replica_sets = wait_for(
            lambda: apps.list_namespaced_replica_set("default", label_selector="app=web").items,
            30,
            "a ReplicaSet",
        )
        assert replica_sets[0].metadata.owner_references[0].name == "web"

        def both_pods() -> list:
            found = core.list_namespaced_pod("default", label_selector="app=web").items
            return found if len(found) == 2 else []

        pods = wait_for(both_pods, 30, "both pods")
        assert len(pods) == 2 and all(p.status.phase == "Pending" for p in pods)

        def failed_scheduling() -> list:
            events = core.list_namespaced_event("default", field_selector="reason=FailedScheduling").items
            return [e for e in events if e.involved_object.name in {p.metadata.name for p in pods}]

        event = wait_for(failed_scheduling, 30, "a FailedScheduling event")[0]
        assert re.search(r"0/3 nodes are available: 3 node\(s\) didn't match", event.message), event.message
    finally:
        apps.delete_namespaced_deployment("web", "default")


def test_readonly_identity_reads_but_cannot_write(kubectl) -> None:
    assert kubectl("ap-south-readonly", "get", "pods", "-A").returncode == 0
    refused = kubectl("ap-south-readonly", "delete", "configmap", "kube-root-ca.crt", check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr


def test_chaostoolkit_kubernetes_drives_the_fleet(
    fleet_dir: Path, api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chaosk8s loads the default kubeconfig, whose location the client reads from $KUBECONFIG at import.
    monkeypatch.setenv("KUBECONFIG", str(fleet_dir / "kubeconfig"))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(fleet_dir / "kubeconfig"))
    secrets = {"KUBERNETES_CONTEXT": "ap-south"}
    apps = client.AppsV1Api(api("ap-south"))
    apps.create_namespaced_deployment("default", yaml.safe_load(DEPLOYMENT))
    try:
        scale_deployment("web", 1, ns="default", secrets=secrets)
        assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1
        assert wait_for(
            lambda: count_pods("app=web", phase="Running", ns="default", secrets=secrets) == 1,
            30,
            "one running pod after scaling to 1",
        )
    finally:
        apps.delete_namespaced_deployment("web", "default")


def test_state_survives_losing_a_cluster(fleet_dir: Path, api) -> None:
    """`fleet stop` is a hard loss (SIGKILL); `fleet start` brings it back on the same etcd data."""
    core = client.CoreV1Api(api("ap-south"))
    core.create_namespaced_config_map("default", {"metadata": {"name": "survivor"}, "data": {"k": "v"}})
    run_cli("fleet", "stop", "ap-south", "--dir", fleet_dir)
    down = {r.component: r.up for r in supervisor.status(fleet_dir) if r.cluster == "ap-south"}
    assert down and not any(down.values())
    with pytest.raises(Exception, match=r"(?i)connection|refused|timed out|Max retries"):
        core.read_namespaced_config_map("survivor", "default", _request_timeout=2)
    run_cli("fleet", "start", "ap-south", "--dir", fleet_dir)
    assert core.read_namespaced_config_map("survivor", "default").data == {"k": "v"}
    core.delete_namespaced_config_map("survivor", "default")


def _fleet_processes(folder: Path, program: str = "") -> list[int]:
    """Processes whose command line names the fleet folder (every component's flags do).

    With `program`, only those whose executable's name is `program`.
    """
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if str(folder) in "\0".join(argv) and (not program or Path(argv[0]).name == program):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


TOKEN_FOLDER = Path("/var/run/secrets/kubernetes.io/serviceaccount").resolve()  # /var/run: a link to /run


def _token_holders(folder: Path) -> set[int]:
    """The fleet's processes (descendants of those naming `folder`) whose mount namespace has a
    service-account token folder mounted: its pods' containers. Other fleets (another test worker's) come
    and go meanwhile."""
    fleet, found = set(_fleet_processes(folder)), set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            points = (line.split()[4] for line in (proc / "mountinfo").read_text().splitlines())
            if str(TOKEN_FOLDER) in points and _ancestors(int(proc.name)) & fleet:
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def _ancestors(pid: int) -> set[int]:
    """The pids above `pid` up to init."""
    found = set()
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        found.add(pid)
    return found


def test_two_fleets_side_by_side_and_down_leaves_nothing(fleet_dir: Path, tmp_path: Path, api) -> None:
    """...and taking one down leaves the other's pods their service-account tokens: removing a mount
    point another fleet's container uses would detach it there (its next client finds no in-cluster
    configuration)."""
    holders = _token_holders(fleet_dir)
    assert holders, "the shared fleet's pods have their tokens mounted"
    second = own(tmp_path / "second")
    run_cli("fleet", "up", "--dir", second, "--clusters", 1, "--no-backups")
    first_state, second_state = FleetState.load(fleet_dir), FleetState.load(second)
    assert first_state.index != second_state.index
    assert not first_state.plan.infra.overlaps(second_state.plan.infra)
    assert _fleet_processes(second)
    scratch = f"fd{second_state.index}-*"
    assert list(tmpdirs.ROOT.glob(scratch)), "the second fleet's containers have temporary folders"
    run_cli("fleet", "down", "--dir", second)
    assert not netns.names(f"fd{second_state.index}-"), "namespaces left behind"
    assert not list(tmpdirs.ROOT.glob(scratch)), "containers' temporary folders left behind"
    assert not _fleet_processes(second), "processes left behind"
    assert second_state.index not in registry.claims()
    assert all(row.up for row in supervisor.status(fleet_dir)), "taking one fleet down touched the other"
    assert client.CoreV1Api(api("us-east")).list_namespace().items
    alive = [pid for pid in holders if Path(f"/proc/{pid}").exists()]
    lost = [pid for pid in alive if not Path(f"/proc/{pid}/root{TOKEN_FOLDER}/token").exists()]
    assert alive and not lost, f"containers of the other fleet lost their token: pids {lost}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_up_leaves_nothing_running(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C or SIGTERM during `up` cleans up at once; after SIGKILL, `fleet down` does."""
    folder = own(tmp_path / "interrupted")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "fleet", "up", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # etcd is the first long-lived component: short-lived helpers may exit before the signal lands.
        wait_for(lambda: _fleet_processes(folder, "etcd"), 60, "the fleet's first etcd")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    if sig == signal.SIGKILL:
        assert _fleet_processes(folder), "SIGKILL cannot clean up: processes are expected until `down`"
        run_cli("fleet", "down", "--dir", folder)
    else:
        assert proc.returncode == 130 and "interrupted" in proc.stderr.read()
    assert not _fleet_processes(folder)
    assert not [c for c in registry.claims().values() if c.folder == folder]
