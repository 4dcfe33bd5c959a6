"""The fleet file: loading, one-line errors naming file and field, durations, helpers, schema, round-trip."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from harness import units
from harness.config import Fleet, dump_fleet, fleet_json_schema, load_fleet
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DURATION = 'expected a duration such as "30s", "1m30s", "250ms" or a number of seconds'
FRACTION = 'expected a fraction in (0, 1] such as 0.999 or "99.9%"'
DNS = "expected a DNS label (lowercase letters, digits and '-', at most 63)"
STATUS = 'expected a status code from 200 to 499 or a class "2xx", "3xx" or "4xx"'

VALID: dict[str, Any] = {
    "name": "local",
    "kubeconfig": "kubeconfig",
    "clusters": [
        {"name": "us-east", "region": "us-east", "zones": ["us-east-a"], "role": "active"},
        {"name": "eu-west", "context": "ctx-eu", "kubeconfig": "other/kc", "region": "eu-west"},
    ],
    "apps": [
        {
            "name": "orders",
            "namespace": "orders",
            "workload": "deployment/orders",
            "service": "orders",
            "global_endpoint": "http://198.18.0.68/",
            "endpoints": {"us-east": "http://198.18.1.10/", "eu-west": "http://198.18.2.10/"},
            "sentinels": {
                "adapter": "http",
                "write": {"path": "/orders"},
                "read": {"path": "/orders", "items": "orders"},
            },
            "health_path": "/readyz",
            "accepted_statuses": ["2xx", 301],
            "served_by": {"header": "X-Served-By"},
            "objectives": {"rto": "30s", "rpo": "5s", "availability": "99%", "latency": "500ms"},
        }
    ],
    "velero": {"binary": "/opt/velero", "namespace": "velero", "storage_location": "default"},
    "infrastructure": {"provider": "localfleet", "settings": {"folder": "/tmp/fleet"}},
    "safety": {
        "allowlist": ["us-east", "ctx-eu"],
        "allow_prod": False,
        "blast_radius": {"max_clusters": 1, "max_percent": 50},
        "abort": {"availability_below": 0.5, "for": "10s"},
        "lease_duration": "300s",
    },
    "local": {"node_monitor_grace_period": "20s"},
}


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    return message.removeprefix(f"{path}: ")


def changed(where: str, value: Any) -> dict[str, Any]:
    """VALID with the value at dotted `where` ("clusters.1.role") replaced; "~" as value deletes it."""
    document = copy.deepcopy(VALID)
    *parents, last = [int(part) if part.isdigit() else part for part in where.split(".")]
    node = document
    for part in parents:
        node = node[part]
    if value == "~":
        del node[last]
    else:
        node[last] = value
    return document


def test_a_valid_fleet_loads_with_typed_values(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID))
    app = fleet.app("orders")
    assert (app.objectives.rto, app.objectives.rpo, app.objectives.latency) == (30.0, 5.0, 0.5)
    assert app.objectives.availability == 0.99
    assert app.accepted_statuses == ("2xx", 301)
    assert app.served_by is not None and (app.served_by.header, app.served_by.json_field) == (
        "X-Served-By",
        None,
    )
    assert fleet.safety.abort is not None and fleet.safety.abort.for_ == 10.0
    assert fleet.safety.lease_duration == 300.0
    assert fleet.kubeconfig_for("us-east") == tmp_path / "kubeconfig"
    assert fleet.kubeconfig_for(fleet.cluster("eu-west")) == tmp_path / "other/kc"
    assert (fleet.context_for("us-east"), fleet.context_for("eu-west")) == ("us-east", "ctx-eu")
    assert fleet.cluster("eu-west").role == "standby" and fleet.cluster("eu-west").environment == "dev"
    assert fleet.primary().name == "us-east"
    assert fleet.local == {"node_monitor_grace_period": "20s"}


def test_defaults_of_a_minimal_fleet(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, {"name": "f", "clusters": [{"name": "a", "region": "r"}]}))
    assert fleet.kubeconfig == Path.home() / ".kube/config"
    assert (fleet.velero.binary, fleet.velero.namespace, fleet.velero.storage_location) == (
        "velero",
        "velero",
        "default",
    )
    assert fleet.infrastructure.provider == "none" and fleet.safety.lease_duration == 300.0
    assert fleet.apps == () and fleet.safety.abort is None


def test_an_app_contract_defaults_to_2xx_and_no_identity(tmp_path: Path) -> None:
    document = changed("apps.0.accepted_statuses", "~")
    del document["apps"][0]["served_by"]
    app = load_fleet(write(tmp_path, document)).app("orders")
    assert (app.accepted_statuses, app.served_by) == (("2xx",), None)
    json_field = load_fleet(write(tmp_path, changed("apps.0.served_by", {"json_field": "cluster"})))
    served_by = json_field.app("orders").served_by
    assert served_by is not None and (served_by.header, served_by.json_field) == (None, "cluster")


def test_tilde_is_expanded_in_kubeconfig_paths(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, changed("clusters.0.kubeconfig", "~/kc")))
    assert fleet.kubeconfig_for("us-east") == Path.home() / "kc"


BAD_VALUES = [
    ("name", "Local_Fleet", f"name: {DNS}, got 'Local_Fleet'"),
    ("name", "~", "name: missing required field"),
    ("kubeconfig", 7, "kubeconfig: expected a path, got 7"),
    ("clusters", "us-east", "clusters: expected a list, got 'us-east'"),
    ("clusters", [], "clusters: expected at least one cluster, got []"),
    ("clusters.0", "us-east", "clusters[0]: expected a mapping, got 'us-east'"),
    ("clusters.1.name", "EU", f"clusters[1].name: {DNS}, got 'EU'"),
    ("clusters.1.context", "", "clusters[1].context: expected a non-empty string, got ''"),
    ("clusters.1.kubeconfig", ["a"], "clusters[1].kubeconfig: expected a path, got a list"),
    ("clusters.1.readonly_context", 3, "clusters[1].readonly_context: expected a string, got 3"),
    ("clusters.1.region", "~", "clusters[1].region: missing required field"),
    ("clusters.1.zones", "eu-west-a", "clusters[1].zones: expected a list, got 'eu-west-a'"),
    ("clusters.0.zones.0", None, "clusters[0].zones[0]: expected a string, got None"),
    (
        "clusters.1.role",
        "primary",
        "clusters[1].role: expected one of active, passive, standby, got 'primary'",
    ),
    ("clusters.1.environment", "production", "clusters[1].environment: expected one of dev, staging, prod, "),
    ("apps", {"orders": {}}, "apps: expected a list, got a mapping"),
    ("apps.0.name", "~", "apps[0].name: missing required field"),
    ("apps.0.namespace", "Orders", f"apps[0].namespace: {DNS}, got 'Orders'"),
    ("apps.0.workload", "job/orders", "apps[0].workload: expected kind/name with kind one of deployment, "),
    ("apps.0.workload", "deployment", "apps[0].workload: expected kind/name with kind one of deployment, "),
    ("apps.0.service", "orders_svc", f"apps[0].service: {DNS}, got 'orders_svc'"),
    ("stress", {"cpu": 1.5}, "stress.cpu: expected a share in [0, 1] such as 0.5, got 1.5"),
    (
        "apps.0.failover",
        {"strategy": "dns"},
        "apps[0].failover.strategy: expected one of command, observe, promote, got 'dns'",
    ),
    ("stress", {"cpu": 1.5}, "stress.cpu: expected a share in [0, 1] such as 0.5, got 1.5"),
    (
        "apps.0.failover",
        {"strategy": "command"},
        "apps[0].failover.command: expected a command (an argv list) for strategy command, got None",
    ),
    ("stress", {"cpu": 1.5}, "stress.cpu: expected a share in [0, 1] such as 0.5, got 1.5"),
    (
        "apps.0.failover",
        {"strategy": "command", "command": ["./flip.sh", "{node}"]},
        "apps[0].failover.command[1]: expected text whose only placeholders are {app}, {namespace}, "
        "{cluster}, {context}, {region}, {zones}, {cloud[KEY]}, got '{node}'",
    ),
    (
        "apps.0.global_endpoint",
        "198.18.0.68",
        "apps[0].global_endpoint: expected an http(s) URL, got '198.18.0.68'",
    ),
    (
        "apps.0.global_endpoint",
        "ftp://h/",
        "apps[0].global_endpoint: expected an http(s) URL, got 'ftp://h/'",
    ),
    ("apps.0.endpoints", ["http://a/"], "apps[0].endpoints: expected a mapping, got a list"),
    (
        "apps.0.endpoints.us-east",
        "http://",
        "apps[0].endpoints.us-east: expected an http(s) URL, got 'http://'",
    ),
    (
        "apps.0.sentinels.write.path",
        "orders",
        "apps[0].sentinels.write.path: expected an http(s) URL, got 'orders'",
    ),
    (
        "apps.0.sentinels.adapter",
        "postgres",
        "apps[0].sentinels.adapter: expected one of http, command, postgresql, got 'postgres'",
    ),
    (
        "apps.0.sentinels",
        {"adapter": "command", "write": ["w", "{seq}", "{namespace}"], "read": ["r"]},
        "apps[0].sentinels.write[2]: expected text whose only placeholders are {seq}, {stream},"
        " {target}, {endpoint}, got '{namespace}'",
    ),
    ("stress", {"cpu": 1.5}, "stress.cpu: expected a share in [0, 1] such as 0.5, got 1.5"),
    (
        "apps.0.failover",
        {"promote": {"path": "/promote", "body": {"epoch": "$epoch"}}},
        "apps[0].failover.promote.epoch_path: expected epoch_path set when the body uses $epoch, got None",
    ),
    ("apps.0.health_path", "readyz", "apps[0].health_path: expected a path starting with '/', got 'readyz'"),
    ("apps.0.accepted_statuses", "2xx", "apps[0].accepted_statuses: expected a list, got '2xx'"),
    (
        "apps.0.accepted_statuses",
        [],
        'apps[0].accepted_statuses: expected at least one status code or class such as "2xx", got []',
    ),
    ("apps.0.accepted_statuses.1", 503, f"apps[0].accepted_statuses[1]: {STATUS}, got 503"),
    ("apps.0.accepted_statuses.1", "5xx", f"apps[0].accepted_statuses[1]: {STATUS}, got '5xx'"),
    ("apps.0.accepted_statuses.1", "301", f"apps[0].accepted_statuses[1]: {STATUS}, got '301'"),
    ("apps.0.accepted_statuses.0", True, f"apps[0].accepted_statuses[0]: {STATUS}, got True"),
    ("apps.0.served_by", "X-Served-By", "apps[0].served_by: expected a mapping, got 'X-Served-By'"),
    ("apps.0.served_by", {}, "apps[0].served_by: expected exactly one of header, json_field, got {}"),
    (
        "apps.0.served_by.json_field",
        "cluster",
        "apps[0].served_by: expected exactly one of header, json_field, got a mapping",
    ),
    (
        "apps.0.served_by.header",
        "X Served By",
        "apps[0].served_by.header: expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), "
        "got 'X Served By'",
    ),
    ("apps.0.served_by.json_field", "", "apps[0].served_by.json_field: expected a non-empty string, got ''"),
    ("apps.0.objectives", 30, "apps[0].objectives: expected a mapping, got 30"),
    ("apps.0.objectives.rto", "30 seconds", f"apps[0].objectives.rto: {DURATION}, got '30 seconds'"),
    ("apps.0.objectives.rpo", -5, f"apps[0].objectives.rpo: {DURATION}, got -5"),
    ("apps.0.objectives.availability", 99, f"apps[0].objectives.availability: {FRACTION}, got 99"),
    ("apps.0.objectives.availability", "0%", f"apps[0].objectives.availability: {FRACTION}, got '0%'"),
    ("apps.0.objectives.latency", "0s", f"apps[0].objectives.latency: {DURATION}, above zero, got '0s'"),
    ("velero", "velero", "velero: expected a mapping, got 'velero'"),
    ("velero.binary", "", "velero.binary: expected a non-empty string, got ''"),
    ("velero.namespace", "Velero", f"velero.namespace: {DNS}, got 'Velero'"),
    ("velero.storage_location", None, "velero.storage_location: expected a string, got None"),
    (
        "infrastructure.provider",
        "aws",
        "infrastructure.provider: expected one of none, localfleet, command, ",
    ),
    ("infrastructure.settings", ["x"], "infrastructure.settings: expected a mapping, got a list"),
    ("safety.allowlist", "us-east", "safety.allowlist: expected a list, got 'us-east'"),
    ("safety.allow_prod", "yes please", "safety.allow_prod: expected true or false, got 'yes please'"),
    (
        "safety.blast_radius.max_clusters",
        0,
        "safety.blast_radius.max_clusters: expected an integer >= 1, got 0",
    ),
    (
        "safety.blast_radius.max_clusters",
        "1",
        "safety.blast_radius.max_clusters: expected an integer, got '1'",
    ),
    (
        "safety.blast_radius.max_percent",
        150,
        "safety.blast_radius.max_percent: expected an integer <= 100, got 150",
    ),
    (
        "safety.abort.availability_below",
        "~",
        "safety.abort: expected at least one of availability_below, promql, alerts",
    ),
    ("safety.abort.availability_below", 1.5, f"safety.abort.availability_below: {FRACTION}, got 1.5"),
    ("safety.abort.for", "soon", f"safety.abort.for: {DURATION}, got 'soon'"),
    ("safety.lease_duration", 0, f"safety.lease_duration: {DURATION}, above zero, got 0"),
    ("local", ["x"], "local: expected a mapping, got a list"),
]


@pytest.mark.parametrize(
    ("where", "value", "message"), BAD_VALUES, ids=[f"{w}={v!r}" for w, v, _ in BAD_VALUES]
)
def test_a_bad_value_gives_one_line_naming_file_and_field(
    tmp_path: Path, where: str, value: Any, message: str
) -> None:
    assert error_of(write(tmp_path, changed(where, value))).startswith(message)


CROSS_FIELD = [
    (
        "clusters.1.name",
        "us-east",
        "clusters[1].name: expected a name not used by clusters[0], got 'us-east'",
    ),
    (
        "clusters.1",
        {"name": "b", "region": "r", "context": "us-east"},
        "clusters[1].context: expected a context ",
    ),
    ("apps", VALID["apps"] * 2, "apps[1].name: expected a name not used by apps[0], got 'orders'"),
    (
        "apps.0.endpoints.mars",
        "http://m/",
        "apps[0].endpoints.mars: expected a cluster name (us-east, eu-west), ",
    ),
    (
        "safety.allowlist.1",
        "eu-west",
        "safety.allowlist[1]: expected a context of a cluster (us-east, ctx-eu), ",
    ),
]


@pytest.mark.parametrize(("where", "value", "message"), CROSS_FIELD, ids=[w for w, _, _ in CROSS_FIELD])
def test_cross_field_rules(tmp_path: Path, where: str, value: Any, message: str) -> None:
    assert error_of(write(tmp_path, changed(where, value))).startswith(message)


def test_same_context_in_another_kubeconfig_is_another_cluster(tmp_path: Path) -> None:
    document = changed("clusters.1.context", "us-east")
    document["safety"]["allowlist"] = ["us-east"]
    assert len(load_fleet(write(tmp_path, document)).clusters) == 2


def test_a_write_path_needs_the_global_endpoint_to_be_relative_to(tmp_path: Path) -> None:
    document = changed("apps.0.endpoints", {"us-east": "http://192.0.2.11/"})  # writes never go to a cluster
    del document["apps"][0]["global_endpoint"]
    assert error_of(write(tmp_path, document)) == (
        "apps[0].sentinels.write.path: expected an absolute URL (the app has no global_endpoint for a path),"
        " got '/orders'"
    )


def test_unknown_field_suggests_the_close_one(tmp_path: Path) -> None:
    document = changed("clusters.0.region", "~")
    document["clusters"][0]["regoin"] = "us-east"
    assert error_of(write(tmp_path, document)) == (
        "clusters[0].region: missing required field;"
        " clusters[0].regoin: unknown field (did you mean 'region'?)"
    )
    assert error_of(write(tmp_path, changed("safety.abort.fro", "1s"))) == (
        "safety.abort.fro: unknown field (did you mean 'for'?)"
    )
    assert error_of(write(tmp_path, changed("paint", "blue"))) == "paint: unknown field"
    assert error_of(write(tmp_path, changed("apps.0.served_by.headr", "X"))) == (
        "apps[0].served_by.headr: unknown field (did you mean 'header'?)"
    )


def test_many_errors_are_capped_on_one_line(tmp_path: Path) -> None:
    document = {"name": "X", "clusters": [{"name": "A"}, {"name": "B"}], "velero": 1}
    assert error_of(write(tmp_path, document)) == (
        f"name: {DNS}, got 'X'; clusters[0].name: {DNS}, got 'A'; clusters[0].region: missing required field"
        " (and 3 more)"
    )


def test_long_values_are_shortened(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, changed("clusters.0.role", "x" * 500)))
    assert len(message) < 200 and message.endswith("...")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a\nclusters: [\n", "invalid YAML: "),
        ("name: a\n  clusters: x\n", "invalid YAML: mapping values are not allowed here"),
        ("- name: a\n", "expected a mapping of fleet settings at the top level, got a list"),
        ("", "expected a mapping of fleet settings at the top level, got None"),
    ],
)
def test_unreadable_documents(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="^" + str(path)) as caught:
        load_fleet(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nclusters:\n  - name: b\n    region: r\n    region: s\n")
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert str(caught.value) == f"{path}:5:5: invalid YAML: duplicate key 'region'"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fleet(tmp_path / "nope.yaml")
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: cannot read fleet file: No such file or directory"


def test_cluster_and_app_lookups_name_what_exists(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID))
    with pytest.raises(ConfigError, match=r"expected a cluster name \(us-east, eu-west\), got 'mars'"):
        fleet.cluster("mars")
    with pytest.raises(ConfigError, match=r"expected an app name \(orders\), got 'cart'"):
        fleet.app("cart")


@pytest.mark.parametrize(
    ("roles", "message"), [(["standby", "passive"], "none"), (["active"] * 2, "us-east, eu-west")]
)
def test_primary_needs_exactly_one_active_cluster(tmp_path: Path, roles: list[str], message: str) -> None:
    document = copy.deepcopy(VALID)
    for cluster, role in zip(document["clusters"], roles, strict=True):
        cluster["role"] = role
    with pytest.raises(ConfigError, match=f"expected exactly one active cluster, got {message}$"):
        load_fleet(write(tmp_path, document)).primary()


def test_models_are_frozen(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID))
    with pytest.raises(ValueError, match="frozen"):
        fleet.name = "other"  # type: ignore[misc]


def test_the_example_fleet_loads() -> None:
    fleet = load_fleet(ROOT / "fixtures/fleet.example.yaml")
    assert {c.region for c in fleet.clusters} == {"us-east-1", "eu-west-1", "ap-southeast-1"}
    assert fleet.primary().name == "us-east-1" and fleet.infrastructure.provider == "command"
    checkout = fleet.app("checkout")
    assert (checkout.objectives.rto, checkout.objectives.availability) == (300.0, 0.99)
    assert set(checkout.endpoints) == {c.name for c in fleet.clusters}
    assert checkout.accepted_statuses == ("2xx",) and checkout.served_by is not None


@pytest.mark.parametrize("source", ["valid", "example"])
def test_dump_then_load_gives_the_same_fleet(tmp_path: Path, source: str) -> None:
    fleet = load_fleet(write(tmp_path, VALID) if source == "valid" else ROOT / "fixtures/fleet.example.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert load_fleet(write(elsewhere, dump_fleet(fleet))) == fleet


def test_schema_file_is_in_sync() -> None:
    committed = (ROOT / "harness/schema/fleet.schema.json").read_text(encoding="utf-8")
    assert committed == json.dumps(fleet_json_schema(), indent=2) + "\n", (
        "harness/schema/fleet.schema.json is stale; regenerate it with: "
        "python -m harness.config > harness/schema/fleet.schema.json"
    )


def test_schema_describes_the_fleet() -> None:
    schema = fleet_json_schema()
    assert schema["required"] == ["name", "clusters"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(Fleet.model_fields)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *[("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5), ("1m30s", 90)],
        *[("1h0m1s", 3601), (".5s", 0.5), (" 2s ", 2), (0, 0), (7, 7), (2.5, 2.5), ("100ms", 0.1)],
    ],
)
def test_durations_parse(text: str | float, seconds: float) -> None:
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "s", "30", "-1s", "1.5", "1 m", "1e3s", "1d", "30sec", -1, True, None, float("nan")]
)
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        units.parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (1.5, "1.5s"), (90, "1m30s"), (5400, "1h30m"), (90.5, "90.5s")],
)
def test_durations_format_as_people_write_them(seconds: float, text: str) -> None:
    assert units.format_duration(seconds) == text


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_formatted_durations_read_back_exactly(seconds: float) -> None:
    assert units.parse_duration(units.format_duration(seconds)) == seconds


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["h", "m", "s", "ms"])), min_size=1))
def test_duration_parts_add_up(parts: list[tuple[int, str]]) -> None:
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert units.parse_duration(text) == pytest.approx(sum(n * scale[unit] for n, unit in parts))


@pytest.mark.parametrize(
    ("value", "share"), [("99%", 0.99), ("99.9%", 0.999), ("100%", 1.0), (0.5, 0.5), (1, 1.0)]
)
def test_fractions_parse(value: object, share: float) -> None:
    assert units.parse_fraction(value) == share


@pytest.mark.parametrize("bad", [0, "0%", 1.01, "101%", "99", "-1%", True, None])
def test_bad_fractions_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="not a fraction"):
        units.parse_fraction(bad)


STAGES = [{"name": "canary", "clusters": ["us-east"]}, {"name": "prod", "clusters": ["eu-west"]}]
ROLLOUT_ERRORS = [
    ([{"name": "canary", "clusters": ["mars"]}], "rollout.stages[0].clusters[0]: expected a cluster name"),
    ([STAGES[0], STAGES[0] | {"clusters": ["eu-west"]}], "rollout.stages[1].name: expected a name not used"),
    (
        [STAGES[0], {"name": "prod", "clusters": ["us-east"]}],
        "rollout.stages[1].clusters[0]: expected a cluster in no other stage (stage canary has it), got",
    ),
    ([{"name": "canary", "clusters": []}], "rollout.stages[0].clusters: expected"),
    ([{"name": "Canary", "clusters": ["us-east"]}], f"rollout.stages[0].name: {DNS}"),
    (
        [STAGES[0] | {"objectives": {"availability": 2}}],
        "rollout.stages[0].objectives.availability: expected",
    ),
    ([], "rollout.stages: expected"),
]


@pytest.mark.parametrize(("stages", "message"), ROLLOUT_ERRORS)
def test_rollout_stages_are_checked_in_one_line(tmp_path: Path, stages: list, message: str) -> None:
    assert error_of(write(tmp_path, VALID | {"rollout": {"stages": stages}})).startswith(message)


def test_a_stage_and_the_one_before_it(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID | {"rollout": {"stages": STAGES, "soak": "30s"}}))
    assert fleet.rollout is not None and fleet.rollout.soak == 30.0
    assert [s.name if s else None for s in fleet.stage("prod")] == ["prod", "canary"]
    assert fleet.stage("canary")[1] is None
    with pytest.raises(
        ConfigError, match=r"rollout.stages: expected a stage name \(canary, prod\), got 'dev'"
    ):
        fleet.stage("dev")
