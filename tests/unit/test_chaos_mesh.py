"""The chaos controller's pure parts: CRDs, pod selection and modes, status records, rules, stress sizes."""

import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.localfleet.chaos import containers, crds, netfaults, records, selection, stressing


def pod(name: str, namespace: str = "orders", phase: str = "Running", **labels: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
        "status": {"phase": phase, "podIP": "100.64.0.9"},
    }


PODS = [
    pod("a", app="orders"),
    pod("b", app="orders"),
    pod("c", app="other"),
    pod("d", "kube-system", app="orders"),
]


def names(pods: list[dict]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_each_kind_has_a_structural_crd_with_a_status_subresource() -> None:
    for kind in crds.KINDS:
        crd = crds.definition(kind)
        version = crd["spec"]["versions"][0]
        assert crd["metadata"]["name"] == f"{crds.plural(kind)}.chaos-mesh.org"
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
        schema = version["schema"]["openAPIV3Schema"]
        assert "nullable" not in schema and schema["properties"]["spec"]["required"][:2] == [
            "selector",
            "mode",
        ]
    network = crds.definition("NetworkChaos")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = network["properties"]["spec"]["properties"]
    assert "partition" in spec["action"]["enum"] and spec["direction"]["enum"] == ["to", "from", "both"]
    assert spec["target"]["properties"]["selector"] is crds.SELECTOR


def test_selector_defaults_to_the_chaos_namespace_and_filters_labels() -> None:
    chosen = selection.select(
        PODS,
        {"selector": {"labelSelectors": {"app": "orders"}}, "mode": "all"},
        "orders",
        {},
        random.Random(1),
    )
    assert names(chosen) == ["a", "b"]
    everywhere = {
        "selector": {"namespaces": ["orders", "kube-system"], "labelSelectors": {"app": "orders"}},
        "mode": "all",
    }
    assert names(selection.select(PODS, everywhere, "x", {}, random.Random(1))) == ["d", "a", "b"]


def test_selector_by_pod_names_expressions_phases_and_deletion() -> None:
    by_name = {"selector": {"pods": {"orders": ["b", "c"]}}, "mode": "all"}
    assert names(selection.select(PODS, by_name, "x", {}, random.Random(1))) == ["b", "c"]
    expression = {
        "selector": {"expressionSelectors": [{"key": "app", "operator": "NotIn", "values": ["orders"]}]},
        "mode": "all",
    }
    assert names(selection.select(PODS, expression, "orders", {}, random.Random(1))) == ["c"]
    finished, deleted = pod("e", phase="Succeeded"), pod("f")
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert names(
        selection.select([*PODS, finished, deleted], {"mode": "all"}, "orders", {}, random.Random(1))
    ) == ["a", "b", "c"]
    phased = {"selector": {"podPhaseSelectors": ["Succeeded"]}, "mode": "all"}
    assert names(selection.select([*PODS, finished], phased, "orders", {}, random.Random(1))) == ["e"]


@pytest.mark.parametrize(
    ("mode", "value", "count"),
    [("one", None, 1), ("all", None, 10), ("fixed", "3", 3), ("fixed", "30", 10), ("fixed-percent", "25", 2)],
)
def test_modes_pick_as_many_pods_as_chaos_mesh_does(mode: str, value: str | None, count: int) -> None:
    many = [pod(f"p{i}") for i in range(10)]
    assert len(selection.apply_mode(many, mode, value, random.Random(7))) == count


def test_random_max_percent_stays_under_its_bound_and_bad_modes_are_named() -> None:
    many = [pod(f"p{i}") for i in range(10)]
    counts = {
        len(selection.apply_mode(many, "random-max-percent", "30", random.Random(s))) for s in range(50)
    }
    assert counts <= {0, 1, 2, 3} and len(counts) > 1
    with pytest.raises(selection.SelectionError, match="no pod is selected"):
        selection.apply_mode([], "all", None, random.Random(1))
    with pytest.raises(selection.SelectionError, match="unknown mode 'most'"):
        selection.apply_mode(many, "most", None, random.Random(1))
    with pytest.raises(selection.SelectionError, match="numeric value"):
        selection.apply_mode(many, "fixed", "lots", random.Random(1))


def test_go_durations_and_the_desired_phase() -> None:
    assert records.parse_duration("1m30s") == 90 and records.parse_duration("500ms") == 0.5
    with pytest.raises(ValueError, match="not a Go duration"):
        records.parse_duration("30 seconds")
    created = datetime(2026, 1, 1, tzinfo=UTC)
    chaos = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"duration": "30s"}}
    assert records.desired_phase(chaos, created + timedelta(seconds=29)) == records.RUN
    assert records.desired_phase(chaos, created + timedelta(seconds=30)) == records.STOP
    chaos["metadata"]["annotations"] = {records.PAUSE_ANNOTATION: "true"}
    assert records.desired_phase(chaos, created) == records.STOP


def test_records_move_with_successful_events_only_and_set_the_conditions() -> None:
    record, now = records.new_record("orders/a"), datetime(2026, 1, 1, tzinfo=UTC)
    records.note(record, "Apply", False, "tc netem is needed", now)
    assert record["phase"] == records.NOT_INJECTED and record["events"][-1]["type"] == "Failed"
    records.note(record, "Apply", True, "nftables", now)
    assert (record["phase"], record["injectedCount"]) == (records.INJECTED, 1)
    status = records.status([record], records.RUN, False)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Selected": "True",
        "AllInjected": "True",
        "AllRecovered": "False",
        "Paused": "False",
    }
    records.note(record, "Recover", True, "", now)
    assert (record["phase"], record["recoveredCount"]) == (records.NOT_INJECTED, 1)
    unselected = records.status(None, records.RUN, False, "no pod is selected")
    assert unselected["conditions"][0] == {
        "type": "Selected",
        "status": "False",
        "reason": "no pod is selected",
    }


def test_partition_rules_drop_both_ways_to_the_peers_only() -> None:
    script = netfaults.nft_script("chaos_x", "partition", "both", ["198.18.0.0/26", "100.64.16.0/20"], 0)
    assert "elements = { 198.18.0.0/26, 100.64.16.0/20 }" in script
    assert (
        'oifname != "lo" ip daddr @peers drop' in script and 'iifname != "lo" ip saddr @peers drop' in script
    )
    to_all = netfaults.nft_script("chaos_x", "loss", "to", [], 25)
    assert (
        "hook input" not in to_all and "numgen random mod 100 < 25 drop" in to_all and "@peers" not in to_all
    )
    with pytest.raises(netfaults.InjectionError, match="direction 'up'"):
        netfaults.nft_script("chaos_x", "partition", "up", [], 0)


def test_peers_bandwidth_and_netem_parameters() -> None:
    assert netfaults.peers(["198.18.0.5", "100.64.16.0/20"]) == ["198.18.0.5/32", "100.64.16.0/20"]
    assert netfaults.tbf_args({"rate": "1mbps", "limit": 20000, "buffer": 10000}) == [
        "tbf",
        "rate",
        "1000000bit",
        "burst",
        "10000",
        "limit",
        "20000",
    ]
    spec = {"action": "delay", "delay": {"latency": "100ms", "jitter": "10ms"}}
    assert netfaults.netem_args(spec) == ["netem", "delay", "100ms", "10ms"]
    assert netfaults.table_name("e47b5cf5-aa7c-4872-9d3e-000000000000") == "chaos_e47b5cf5aa7c4872"


def test_stress_options_from_chaos_mesh_stressors() -> None:
    assert stressing.size_bytes("256MB", 0) == 256 << 20 and stressing.size_bytes("1Gi", 0) == 1 << 30
    assert stressing.size_bytes("10%", 1000) == 100
    args = stressing.stress_args(
        {"cpu": {"workers": 2, "load": 50}, "memory": {"workers": 2, "size": "100MB"}}
    )
    assert args == ["--cpu", "2", "--cpu-load", "50", "--vm", "2", "--vm-keep", "--vm-bytes", str(100 << 20)]
    with pytest.raises(ValueError, match="give cpu or memory"):
        stressing.stress_args({})


def test_a_chaos_marks_its_process_and_the_descendants_that_lost_the_mark(monkeypatch) -> None:
    """stress-ng's workers write their titles over their environment: found as the marked one's children."""
    shell = subprocess.Popen(["sh", "-c", "env -i sleep 30 & wait"], env={**os.environ, "MARK": "x"})
    children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children")
    try:
        deadline = time.monotonic() + 10
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)
        (child,) = map(int, children.read_text().split())
        monkeypatch.setattr(
            containers, "pids", lambda uid, container: sorted([shell.pid, child, os.getpid()])
        )
        assert containers.marked("uid", "main", "MARK=x") == sorted([shell.pid, child])
        assert containers.marked("uid", "main", "MARK=y") == []
        os.kill(child, signal.SIGKILL)
    finally:
        shell.kill()
        shell.wait()
