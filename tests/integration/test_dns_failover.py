"""A DNS-based failover observed for real: the local fleet's GSLB publishes the sample app's global name in
the real CoreDNS (authoritative), the runner asks a second CoreDNS that caches (its resolver), and the
active-passive drill loses the primary: the answer moves, the name's RTO splits into its phases with the
TTL's measured; a TTL longer than the RTO objective fails the drill naming cache expiry. The drills break
the fleet, so this module brings a two-cluster fleet of its own (with DNS, without Velero)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from harness.config import load_fleet
from harness.dnswatch import ask
from harness.localfleet import apps
from tests.conftest import started_fleet, wait_for
from tests.integration.test_drills import run_drill, with_objectives

CLUSTERS = ("us-east", "eu-west")


@pytest.fixture(scope="module")
def dns_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "dns-fleet", clusters=2, dns=True) as folder:
        yield folder


def ingress(folder: Path, cluster: str) -> str:
    """The address of the cluster's ingress, from the fleet file's endpoints."""
    url = load_fleet(folder / "fleet.yaml").app("orders").endpoints[cluster]
    return url.split("//", 1)[1].split(":", 1)[0].split("/", 1)[0]


def set_ttl(folder: Path, seconds: int) -> None:
    """The Gslb's spec.strategy.dnsTtlSeconds in every cluster (as k8gb users set it)."""
    for context in CLUSTERS:
        api = config.new_client_from_config(str(folder / "kubeconfig"), context=context)
        try:
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                "k8gb.absa.oss", "v1beta1", "orders", "gslbs", "orders",
                {"spec": {"strategy": {"dnsTtlSeconds": seconds}}},
            )  # fmt: skip
        finally:
            api.close()


def test_coredns_answers_the_global_name_and_the_resolver_caches_it(dns_fleet: Path) -> None:
    dns = load_fleet(dns_fleet / "fleet.yaml").app("orders").dns
    assert dns is not None and dns.name == apps.global_name()
    home = ingress(dns_fleet, "us-east")
    answer = ask(dns.name, dns.authoritative, "authoritative", 1.0)
    assert (answer.addresses, answer.ttl) == ((home,), apps.DNS_TTL_S)
    first = ask(dns.name, dns.resolver or "", "resolver", 1.0)
    cached = wait_for(
        lambda: (
            (a := ask(dns.name, dns.resolver or "", "resolver", 1.0)).ttl is not None
            and a.ttl < (first.ttl or 0)
            and a
        ),
        apps.DNS_TTL_S,
        "the resolver's cached answer to count its TTL down",
    )
    assert first.addresses == cached.addresses == (home,)


def test_losing_the_primary_moves_the_answer_and_splits_the_rto(dns_fleet: Path, tmp_path: Path) -> None:
    done, record = run_drill(dns_fleet, tmp_path, "test_active_passive.py")
    assert done.returncode == 0, done.stdout[-3000:]
    verdict = next(v for v in record["verdicts"] if v["objective"] == "DNS failover")
    assert verdict["status"] == "pass", verdict["message"]
    figures = record["figures"]["orders"]["dns"]
    phases = {p["name"]: p for p in figures["phases"]}
    assert list(phases) == ["detection", "cache expiry", "DNS switch", "first good request"]
    assert all(p["finished"] for p in phases.values())
    assert figures["before"] == [ingress(dns_fleet, "us-east")] and figures["ttl_s"] == apps.DNS_TTL_S
    assert figures["bound_s"] == apps.HEALTH_INTERVAL_S * apps.HEALTH_FALL + apps.DNS_TTL_S
    # The health checks: fall x interval (+ one check's timeout, the zone's reload and the watcher's second).
    assert 1.0 < phases["detection"]["seconds"] < apps.HEALTH_INTERVAL_S * apps.HEALTH_FALL + 3.0
    # The resolver keeps the lost address for what is left of the TTL it cached it with.
    assert phases["cache expiry"]["seconds"] <= apps.DNS_TTL_S + 1.5
    assert sum(p["seconds"] for p in phases.values()) == pytest.approx(figures["rto_s"], abs=1e-6)
    folder = tmp_path / record["run_id"] / "test_lose_the_primary_cluster"
    answers = [json.loads(line) for line in (folder / "dns.jsonl").read_text().splitlines()]
    moved = [a for a in answers if a["addresses"] == [ingress(dns_fleet, "eu-west")]]
    assert {a["server"] for a in moved} == {"authoritative", "resolver"}, "both servers answered eu-west"
    probes = [json.loads(line) for line in (folder / "probes.jsonl").read_text().splitlines()]
    named = {p["address"] for p in probes if p["target"] == "global-name" and p["ok"]}
    assert named == {ingress(dns_fleet, "us-east"), ingress(dns_fleet, "eu-west")}


def test_a_ttl_past_the_rto_objective_fails_the_drill_naming_cache_expiry(
    dns_fleet: Path, tmp_path: Path
) -> None:
    dns = load_fleet(dns_fleet / "fleet.yaml").app("orders").dns
    assert dns is not None and dns.resolver is not None
    set_ttl(dns_fleet, 60)
    try:
        wait_for(
            lambda: (ask(dns.name, dns.resolver, "resolver", 1.0).ttl or 0) > 30,
            15,
            "the resolver to cache 60 s",
        )
        fleet_file = with_objectives(dns_fleet, "rto8", rto="8s")
        done, record = run_drill(dns_fleet, tmp_path, "test_active_passive.py", fleet_file=fleet_file)
    finally:
        set_ttl(dns_fleet, apps.DNS_TTL_S)
    assert done.returncode != 0 and record["verdict"] == "fail"
    verdict = next(v for v in record["verdicts"] if v["objective"] == "DNS failover")
    assert verdict["status"] == "fail", verdict["message"]
    assert "cache expiry still under way" in verdict["message"]
    assert f"the resolver kept {ingress(dns_fleet, 'us-east')} for its TTL of 60 s" in verdict["message"]
    rto = next(v for v in record["verdicts"] if v["objective"] == "RTO")
    assert rto["status"] == "pass", "through the GSLB's own endpoint the same failover met the objective"
