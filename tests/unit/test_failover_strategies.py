"""The failover strategies a fleet file picks per app: command runs the user's script with its
placeholders filled in, timed on the timeline; observe only records that the fleet fails over by itself;
promote moves the Gslb, then makes the call the fleet file describes."""

import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from harness import failover, k8gb
from harness.config import Fleet, load_fleet
from harness.errors import ConfigError
from harness.fleet import FleetAccess
from harness.infra.command import CommandError
from harness.strategies import promote
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
    return FleetAccess(load_fleet_document(tmp_path, document))


def load_fleet_document(tmp_path: Path, document: dict) -> Fleet:
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(document))
    return load_fleet(tmp_path / "fleet.yaml")


def test_the_command_strategy_runs_the_script_with_its_placeholders(tmp_path: Path) -> None:
    out = tmp_path / "args"
    command = [sys.executable, "-c", WRITE_ARGS, str(out), "{app}", "{namespace}", "{cluster}", "{context}"]
    access, timeline = access_with(tmp_path, {"strategy": "command", "command": command}), Timeline()
    failover.fail_over(access, access.fleet.app("shop"), "west", timeline)
    assert out.read_text() == "shop shop-ns west ctx-west"
    names = [e.name for e in timeline.events()]
    assert names == ["failover command.start", "failover command.end", "failover.commanded"]
    assert timeline.events("failover.commanded")[0].detail == {"program": sys.executable}


def test_the_command_strategy_gets_the_cluster_s_region_zones_and_cloud_ids(tmp_path: Path) -> None:
    """A Route 53 failover script needs the record set of the cluster taking over: {cloud[KEY]}."""
    out = tmp_path / "args"
    command = [sys.executable, "-c", WRITE_ARGS, str(out), "{region}", "{zones}", "{cloud[route53_set]}"]
    document = {
        "name": "unit",
        "clusters": [
            {"name": "east", "region": "us-east-1", "role": "active", "cloud": {"route53_set": "use1"}},
            {
                "name": "west",
                "region": "us-west-2",
                "zones": ["us-west-2a", "us-west-2b"],
                "role": "passive",
                "cloud": {"route53_set": "usw2"},
            },
        ],
        "apps": [
            {
                "name": "shop",
                "namespace": "shop",
                "workload": "deployment/shop",
                "failover": {"strategy": "command", "command": command},
            }
        ],
    }
    access = FleetAccess(load_fleet_document(tmp_path, document))
    failover.fail_over(access, access.fleet.app("shop"), "west", Timeline())
    assert out.read_text() == "us-west-2 us-west-2a,us-west-2b usw2"
    del document["clusters"][0]["cloud"]
    expected = (
        "clusters[0].cloud: expected a key route53_set (apps[0].failover uses {cloud[route53_set]}), got {}"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_fleet_document(tmp_path, document)


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


class Roles(BaseHTTPRequestHandler):
    """An app's epoch at /role and its promote call at /take-over (PUT {"term": N})."""

    def do_GET(self) -> None:
        self._answer({"term": self.server.term})  # type: ignore[attr-defined]

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append((self.path, body))  # type: ignore[attr-defined]
        self.server.term = body["term"]  # type: ignore[attr-defined]
        self._answer({"term": body["term"], "role": "primary"})

    def _answer(self, document: object) -> None:
        data = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def apps() -> Iterator[dict[str, ThreadingHTTPServer]]:
    servers = {name: ThreadingHTTPServer(("127.0.0.1", 0), Roles) for name in ("east", "west")}
    for server, term in zip(servers.values(), (7, 3), strict=True):
        server.term, server.calls = term, []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_the_promote_call_is_the_fleet_files_and_outranks_every_epoch(
    tmp_path: Path, apps: dict[str, ThreadingHTTPServer]
) -> None:
    """Another app's API: PUT /take-over with its own body, the epoch read from /role's "term"."""
    call = {"path": "/take-over", "method": "PUT", "body": {"term": "$epoch"}, "epoch_path": "/role"}
    call |= {"epoch_field": "term"}
    document = yaml.safe_load(access_with(tmp_path, {"promote": call}).fleet.model_dump_json())
    document["apps"][0]["endpoints"] = {
        n: f"http://127.0.0.1:{s.server_address[1]}/" for n, s in apps.items()
    }
    app = load_fleet_document(tmp_path, document).app("shop")
    assert promote.promote_data(app, app.failover.promote, "west") == 8, "one above east's 7"
    assert apps["west"].calls == [("/take-over", {"term": 8})]  # type: ignore[attr-defined]
    assert apps["east"].calls == []  # type: ignore[attr-defined]


def test_promote_without_a_promote_call_only_moves_the_gslb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    access, timeline = access_with(tmp_path, {"strategy": "promote"}), Timeline()
    monkeypatch.setattr(k8gb, "move_primary", lambda *_args: ["east", "west"])
    failover.fail_over(access, access.fleet.app("shop"), "west", timeline)
    names = [e.name for e in timeline.events()]
    assert names == ["traffic switch.start", "traffic switch.end", "gslb.updated"], "no data.promoted"


def test_promote_with_a_promote_command_moves_the_gslb_then_runs_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app whose data a script promotes (a database operator's promote): the Gslb first, then the
    script with the placeholders of the cluster taking over, each step timed."""
    out = tmp_path / "args"
    command = [sys.executable, "-c", WRITE_ARGS, str(out), "{app}", "{namespace}", "{cluster}", "{context}"]
    strategy = {"strategy": "promote", "promote_command": [*command, "{region}"], "promote_timeout": "30s"}
    access, timeline = access_with(tmp_path, strategy), Timeline()
    moved: list[str] = []
    monkeypatch.setattr(
        k8gb, "move_primary", lambda _access, _app, cluster: moved.append(cluster) or [cluster]
    )
    failover.fail_over(access, access.fleet.app("shop"), "west", timeline)
    assert moved == ["west"] and out.read_text() == "shop shop-ns west ctx-west eu-west"
    names = [e.name for e in timeline.events()]
    assert names == [
        *("traffic switch.start", "traffic switch.end", "gslb.updated"),
        *("promote.start", "promote.end", "data.promoted"),
    ]
    assert timeline.events("data.promoted")[0].detail == {"epoch": None, "program": sys.executable}


def test_a_failing_promote_command_is_one_line_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = [sys.executable, "-c", "import sys; sys.exit('the replica is 40 s behind')"]
    access = access_with(tmp_path, {"promote_command": script})
    monkeypatch.setattr(k8gb, "move_primary", lambda *_args: ["west"])
    with pytest.raises(CommandError) as caught:
        failover.fail_over(access, access.fleet.app("shop"), "west", Timeline())
    message = str(caught.value)
    assert message.startswith("apps.shop.failover.promote_command: ") and "\n" not in message, message
    assert message.endswith("exited 1: the replica is 40 s behind"), message


@pytest.mark.parametrize(
    ("failover_settings", "problem"),
    [
        (
            {"promote": {"path": "/promote"}, "promote_command": ["promote.sh"]},
            "apps[0].failover.promote_command: expected one of promote, promote_command (not both)",
        ),
        (
            {"promote_command": ["promote.sh", "{pod}"]},
            "apps[0].failover.promote_command",
        ),
    ],
)
def test_a_bad_promote_command_is_one_line_naming_the_field(
    tmp_path: Path, failover_settings: dict, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        access_with(tmp_path, failover_settings)
    assert problem in str(caught.value) and "\n" not in str(caught.value), caught.value
