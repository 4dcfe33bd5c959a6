"""The environment isolation drill on a local fleet of environments (`fleet up --environments
prod,staging,dev`): it passes while prod holds, its non-prod clusters lost or cut off, and fails naming
the coupling when prod's app depends on a service in staging; a fleet without environments skips it, one
without prod is an error, and a non-prod cluster the safety rules refuse stops it before any fault. One
fleet serves every case: the broken fleet's dependency is set and undone through the sample app's
settings."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.config import load_fleet
from harness.faults import Ledger
from tests.conftest import started_fleet
from tests.integration.test_drills import ROOT, app_settings, drill_argv, run_drill

DRILL = "test_environment_isolation.py"
SOAK = ("--soak", "2s")


@pytest.fixture(scope="module")
def env_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    """us-east prod (active), eu-west staging (passive), ap-south dev (standby), without backups."""
    with started_fleet(tmp_path_factory, "env-fleet", environments="prod,staging,dev") as folder:
        yield folder


def variant(fleet: Path, name: str, change: dict) -> str:
    """A fleet file beside the fleet's own (fleet-NAME.yaml) with its clusters' environments or its safety
    section changed; its name."""
    document = yaml.safe_load((fleet / "fleet.yaml").read_text())
    environments = change.get("environments", {})
    for cluster in document["clusters"]:
        if environments.get(cluster["name"], "") is None:
            del cluster["environment"]
        elif cluster["name"] in environments:
            cluster["environment"] = environments[cluster["name"]]
    document["safety"] |= change.get("safety", {})
    (fleet / f"fleet-{name}.yaml").write_text(yaml.safe_dump(document))
    return f"fleet-{name}.yaml"


def faults_injected(record: dict) -> list[str]:
    return [e["cluster"] for e in record["timeline"]["events"] if e["name"] == "fault.injecting"]


def figures_of(record: dict) -> dict:
    return record["figures"]["orders"]["prod"]


@pytest.mark.parametrize("by", ["loss", "partition"])
def test_prod_holds_while_staging_and_dev_are_faulted(env_fleet: Path, tmp_path: Path, by: str) -> None:
    """Lost, or cut off from the rest of the fleet (they run on, unreachable): prod holds either way."""
    fleet = load_fleet(env_fleet / "fleet.yaml")
    assert [(c.name, c.environment) for c in fleet.clusters] == [
        ("us-east", "prod"),
        ("eu-west", "staging"),
        ("ap-south", "dev"),
    ]
    done, record = run_drill(env_fleet, tmp_path, DRILL, *SOAK, "-k", by)
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    kind = {"loss": "cluster-loss", "partition": "wan-partition"}[by]
    faulted = [(f["cluster"], f["fault"]) for f in record["figures"]["orders"]["faulted"]]
    assert faulted == [("eu-west", kind), ("ap-south", kind)]
    assert set(figures_of(record)) == {"us-east", "global"}
    assert (
        figures_of(record)["us-east"]["availability"] >= 0.8 and figures_of(record)["us-east"]["probes"] > 300
    )
    assert all(not f["served_by_non_prod"] for f in figures_of(record).values()), (
        "prod traffic stayed in prod"
    )
    assert "us-east" not in faults_injected(record), "prod is never faulted"
    effective = [e["cluster"] for e in record["timeline"]["events"] if e["name"] == "fault.effective"]
    assert effective == ["eu-west", "ap-south"], "each fault proven before it counts"
    assert not Ledger(env_fleet / "ledger.json").open_entries()


@pytest.mark.parametrize(("by", "done_to"), [("loss", "lost"), ("partition", "cut off")])
def test_a_prod_app_that_depends_on_staging_fails_naming_the_coupling(
    env_fleet: Path, tmp_path: Path, by: str, done_to: str
) -> None:
    staging = load_fleet(env_fleet / "fleet.yaml").app("orders").endpoints["eu-west"]
    with app_settings(
        env_fleet, "us-east", {"ORDERS_DEPENDS_ON": f"catalogue={staging.rstrip('/')}/healthz"}
    ):
        done, record = run_drill(env_fleet, tmp_path, DRILL, *SOAK, "-k", by)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    [miss, *_] = [v for v in record["verdicts"] if v["status"] == "fail"]
    assert miss["objective"] == "us-east availability"
    assert "coupling: prod endpoint us-east degraded: its longest outage" in miss["message"]
    assert (
        f"after non-prod cluster eu-west (staging) was {done_to} (faulted then: eu-west (staging))"
        in (miss["message"])
    ), miss["message"]
    assert figures_of(record)["us-east"]["availability"] < 0.8
    assert not Ledger(env_fleet / "ledger.json").open_entries()


def test_a_fleet_without_environments_skips_and_one_without_prod_is_an_error(
    env_fleet: Path, tmp_path: Path
) -> None:
    flat = variant(env_fleet, "flat", {"environments": dict.fromkeys(("us-east", "eu-west", "ap-south"))})
    done, record = run_drill(env_fleet, tmp_path / "flat", DRILL, "-k", "loss", fleet_file=flat)
    assert done.returncode == 0 and (record["verdict"], record["outcome"]) == ("skip", "skipped")
    assert (
        record["message"].startswith("fleet local-") and "does not segment environments" in record["message"]
    )
    no_prod = variant(env_fleet, "no-prod", {"environments": {"us-east": "dev"}})
    done, record = run_drill(env_fleet, tmp_path / "no-prod", DRILL, "-k", "loss", fleet_file=no_prod)
    assert done.returncode != 0 and record["verdict"] == "error", done.stdout[-3000:]
    assert "has no prod cluster (us-east=dev, eu-west=staging, ap-south=dev)" in record["message"]
    assert not faults_injected(record)


def test_a_refused_non_prod_cluster_stops_the_drill_before_any_fault(env_fleet: Path, tmp_path: Path) -> None:
    refused = variant(env_fleet, "refused", {"safety": {"allowlist": ["us-east", "eu-west"]}})
    done, record = run_drill(env_fleet, tmp_path, DRILL, "--allow-prod", "-k", "loss", fleet_file=refused)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "refused: cluster ap-south (context ap-south) is not in safety.allowlist" in record["message"]
    assert not faults_injected(record), "refused before acting: not even eu-west was lost"
    argv = drill_argv(env_fleet, tmp_path / "dry", DRILL, "--dry-run", "--allow-prod", "-rs", "-k", "loss")
    planned = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert (
        "would: 1. cluster-loss on eu-west: allowed; faulted at once: eu-west "
        "2. cluster-loss on ap-south: allowed; faulted at once: ap-south, eu-west"
    ) in " ".join(planned.split()), planned[-2000:]
