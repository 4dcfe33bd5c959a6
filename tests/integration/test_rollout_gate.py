"""The progressive-rollout gate drill: a new version of the sample app rolls stage by stage (dev, staging,
canary, prod) across a local fleet of environments, `fleetdrill gate --stage NAME` after each stage. A good
version passes every stage; a version that fails a share of its requests, and one that reads a ConfigMap
the passive prod cluster lacks, are stopped at the canary stage with the cause named, and never reach
prod. The examples that fit the tools running rollouts (an Argo Rollouts AnalysisTemplate, a Flagger
Canary) are accepted by the API server with the tools' real CRDs installed.

The fleet: us-east prod (active), eu-west prod (passive), ap-south staging, us-east-2 dev, without backups.
Stages: dev [us-east-2], staging [ap-south], canary [us-east], prod [eu-west]. dev and staging are smoke
stages (availability 50% over the soak); canary and prod hold 95%. Each test puts the app back as found.
"""

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from harness import failover
from harness.config import load_fleet
from tests.conftest import run_cli, started_fleet, wait_for
from tests.upstream import ARGO_ROLLOUTS, FLAGGER, module_file

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "examples"
VARIANT = "fleet-rollout.yaml"
STAGES = [
    {"name": "dev", "clusters": ["us-east-2"], "objectives": {"availability": 0.5}},
    {"name": "staging", "clusters": ["ap-south"], "objectives": {"availability": 0.5}},
    {"name": "canary", "clusters": ["us-east"], "objectives": {"availability": 0.95}},
    {"name": "prod", "clusters": ["eu-west"], "objectives": {"availability": 0.95}},
]
SOAK = "4s"


@dataclass(frozen=True)
class Version:
    """A version of the sample app: its image, extra environment, and a ConfigMap it reads (applied with
    it to each stage's clusters, as its manifests would be)."""

    image: str
    env: dict[str, str] = field(default_factory=dict)
    config_map: str | None = None


@dataclass
class Rolled:
    """How far a version got: the stage that stopped it (None: every stage passed), each gate's output,
    and per stage the seconds its rollout and its gate took."""

    stopped: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def rollout_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(
        tmp_path_factory, "rollout", clusters=4, environments="prod,prod,staging,dev"
    ) as folder:
        document = yaml.safe_load((folder / "fleet.yaml").read_text())
        document["rollout"] = {"stages": STAGES, "soak": SOAK}
        (folder / VARIANT).write_text(yaml.safe_dump(document))
        yield folder


@pytest.fixture(scope="module")
def apps(rollout_fleet: Path) -> Iterator[dict[str, client.AppsV1Api]]:
    apis = {
        c.name: config.new_client_from_config(str(rollout_fleet / "kubeconfig"), context=c.name)
        for c in load_fleet(rollout_fleet / "fleet.yaml").clusters
    }
    yield {name: client.AppsV1Api(api) for name, api in apis.items()}
    for api in apis.values():
        api.close()


@pytest.fixture
def as_found(rollout_fleet: Path, apps: dict[str, client.AppsV1Api]) -> Iterator[None]:
    """Every cluster's app back to the template it had, and the versions' ConfigMaps gone, after the test."""
    templates = {
        name: api.read_namespaced_deployment("orders", "orders").spec.template for name, api in apps.items()
    }
    yield
    for name, api in apps.items():
        deployment = api.read_namespaced_deployment("orders", "orders")
        if deployment.spec.template.spec.containers[0].image != templates[name].spec.containers[0].image:
            deployment.spec.template = templates[name]
            api.replace_namespaced_deployment("orders", "orders", deployment)
        core = client.CoreV1Api(api.api_client)
        for found in core.list_namespaced_config_map("orders").items:
            if found.metadata.name.startswith("orders-schema-"):
                core.delete_namespaced_config_map(found.metadata.name, "orders")
    for name, api in apps.items():
        wait_rolled_out(rollout_fleet, api, name, templates[name].spec.containers[0].image)


def wait_rolled_out(folder: Path, api: client.AppsV1Api, cluster: str, image: str) -> None:
    """The cluster's Deployment runs `image` on every replica, available, and the app answers."""
    app = load_fleet(folder / "fleet.yaml").app("orders")

    def done() -> bool:
        d = api.read_namespaced_deployment("orders", "orders")
        s = d.status
        return (
            d.spec.template.spec.containers[0].image == image
            and (s.observed_generation or 0) >= d.metadata.generation
            and s.updated_replicas == s.available_replicas == d.spec.replicas
            and not s.unavailable_replicas
            and failover.app_serves(app, cluster)
        )

    wait_for(done, 120, f"{image} to roll out in {cluster}")


def apply(api: client.AppsV1Api, version: Version) -> None:
    """The version in one cluster: its ConfigMap, then its Deployment's template."""
    if version.config_map is not None:
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=version.config_map), data={"ORDERS_SCHEMA": version.image}
        )
        client.CoreV1Api(api.api_client).create_namespaced_config_map("orders", body)
    deployment = api.read_namespaced_deployment("orders", "orders")
    container = deployment.spec.template.spec.containers[0]
    container.image = version.image
    container.env = [
        *(container.env or []),
        *(client.V1EnvVar(name=k, value=v) for k, v in version.env.items()),
    ]
    if version.config_map is not None:
        source = client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name=version.config_map))
        container.env_from = [*(container.env_from or []), source]
    api.replace_namespaced_deployment("orders", "orders", deployment)


def roll(folder: Path, apps: dict[str, client.AppsV1Api], version: Version) -> Rolled:
    """Roll the version stage by stage, gating each; stop at the first stage whose gate fails."""
    rolled = Rolled()
    for stage in STAGES:
        started = time.monotonic()
        for cluster in stage["clusters"]:
            apply(apps[cluster], version)
        for cluster in stage["clusters"]:
            wait_rolled_out(folder, apps[cluster], cluster, version.image)
        gated = time.monotonic()
        argv = ["gate", "--fleet", folder / VARIANT, "--stage", stage["name"], "--image", version.image]
        done = run_cli(*argv, timeout=180, check=False)
        took = rolled.timings[stage["name"]] = (gated - started, time.monotonic() - gated)
        rolled.outputs[stage["name"]] = done.stdout + done.stderr
        assert done.returncode in (0, 1), done.stderr
        print(f"{version.image} {stage['name']}: rollout {took[0]:.1f} s, gate {took[1]:.1f} s")
        if done.returncode != 0:
            print(done.stdout.splitlines()[-1])  # the headline: the stage and the cause
            rolled.stopped = stage["name"]
            break
    return rolled


def found_availability(output: str, start: str) -> float:
    """The availability (%) the gate's line starting with `start` found over the soak."""
    (line,) = [line for line in output.splitlines() if line.strip().startswith(f"{start}: availability over")]
    return float(line.split(", found ")[1].split("%")[0])


def running(api: client.AppsV1Api) -> str:
    return api.read_namespaced_deployment("orders", "orders").spec.template.spec.containers[0].image


def test_a_good_version_passes_every_stage(rollout_fleet: Path, apps: dict, as_found: None) -> None:
    fleet = load_fleet(rollout_fleet / VARIANT)
    assert [(c.name, c.role, c.environment) for c in fleet.clusters] == [
        ("us-east", "active", "prod"),
        ("eu-west", "passive", "prod"),
        ("ap-south", "standby", "staging"),
        ("us-east-2", "standby", "dev"),
    ]
    rolled = roll(rollout_fleet, apps, Version("fleetdrill.io/orders:2"))
    assert rolled.stopped is None, rolled.outputs
    assert all(running(api) == "fleetdrill.io/orders:2" for api in apps.values())
    canary = rolled.outputs["canary"]
    assert "ok   eu-west: workload deployment/orders: expected running" in canary, canary
    assert "ok   us-east: configuration parity with ap-south (stage staging)" in canary, canary
    assert "ok   us-east: availability over the soak: expected >= 95.00%" in canary, canary
    assert "note configuration parity: dev is the first stage" in rolled.outputs["dev"]
    assert (
        "note DR readiness: no passive cluster of environment prod outside the stage"
        in rolled.outputs["prod"]
    )
    assert "ok   eu-west: configuration parity with us-east (stage canary)" in rolled.outputs["prod"]


def test_a_version_that_fails_a_share_of_requests_is_stopped_at_the_canary(
    rollout_fleet: Path, apps: dict, as_found: None
) -> None:
    rolled = roll(rollout_fleet, apps, Version("fleetdrill.io/orders:3", env={"ORDERS_FAIL_SHARE": "0.3"}))
    assert rolled.stopped == "canary", rolled.outputs
    canary = rolled.outputs["canary"]
    assert 60 < found_availability(canary, "FAIL us-east") < 80, canary
    assert "probes failed: HTTP 500 x" in canary and "stage canary: stopped: 1 of " in canary, canary
    assert 60 < found_availability(rolled.outputs["dev"], "ok   us-east-2") < 80, "dev's smoke bound holds"
    assert running(apps["eu-west"]) == "fleetdrill.io/orders:1", "the bad version never reached prod"


def test_a_version_whose_config_the_passive_cluster_lacks_is_stopped_at_the_canary(
    rollout_fleet: Path, apps: dict, as_found: None
) -> None:
    version = Version("fleetdrill.io/orders:4", config_map="orders-schema-4")
    rolled = roll(rollout_fleet, apps, version)
    assert rolled.stopped == "canary", rolled.outputs
    canary = rolled.outputs["canary"]
    cause = (
        "FAIL eu-west: configmap orders/orders-schema-4 (the new version reads it): expected present, "
        "found missing"
    )
    assert cause in canary, canary
    assert "ok   us-east: availability over the soak" in canary, "it serves well: only DR is broken"
    assert running(apps["eu-west"]) == "fleetdrill.io/orders:1"


def test_the_rollout_tools_examples_are_valid_with_their_real_crds(
    rollout_fleet: Path, kubectl_bin: Path
) -> None:
    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        argv = [str(kubectl_bin), "--kubeconfig", str(rollout_fleet / "kubeconfig"), "--context", "us-east-2"]
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=60, input=stdin, check=False
        )

    crds = [
        module_file(ARGO_ROLLOUTS, "manifests/crds/analysis-template-crd.yaml"),
        module_file(FLAGGER, "artifacts/flagger/crd.yaml"),
    ]
    for text in crds:
        created = kubectl("create", "-f", "-", stdin=text)
        assert created.returncode == 0, created.stderr
    names = ["analysistemplates.argoproj.io", "canaries.flagger.app"]
    waited = kubectl("wait", "--for=condition=Established", "--timeout=30s", *(f"crd/{n}" for n in names))
    assert waited.returncode == 0, waited.stderr
    for example, accepted in [
        ("argo-rollouts-gate.yaml", "analysistemplate.argoproj.io/fleetdrill-gate created (server dry run)"),
        ("flagger-gate.yaml", "canary.flagger.app/orders created (server dry run)"),
    ]:
        done = kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES / example))
        assert done.returncode == 0 and accepted in done.stdout, done.stderr + done.stdout
    broken = (EXAMPLES / "flagger-gate.yaml").read_text().replace("type: rollout", "type: gate-keeping")
    refused = kubectl("apply", "--dry-run=server", "-f", "-", stdin=broken)
    assert refused.returncode != 0 and "type" in refused.stderr, "the real CRD's schema is what judged it"
