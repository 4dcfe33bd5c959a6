"""A bad kubeconfig or an API server that does not answer is one line naming the file, the context and the
fix: from FleetAccess, `fleetdrill doctor`, `fleetdrill run` and the pytest plugin; never a traceback, a
retry dump or a credential."""

import base64
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from harness import cli
from harness.config import load_fleet
from harness.fleet import REACH, REJECTED, ClusterError, FleetAccess, UnreachableError
from harness.kubeconfig import KubeconfigError
from harness.localfleet import pki

pytest_plugins = ["pytester"]

TOKEN = "s3cr3t-t0ken"
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
  - {{name: c, cluster: {{server: "{server}"}}}}
users:
  - {{name: u, user: {{token: {token}}}}}
  - {{name: cert, user: {{client-certificate: missing.crt, client-key: missing.key}}}}
contexts:
  - {{name: a, context: {{cluster: c, user: u}}}}
  - {{name: b, context: {{cluster: c, user: u}}}}
  - {{name: certs, context: {{cluster: c, user: cert}}}}
"""
BAD_YAML = f"users:\n- name: u\n  user:\n    token: {TOKEN}: more\n"
DOWN_FLEET = """
name: unit
clusters:
  - {name: east, context: a, kubeconfig: kubeconfig, region: us-east, role: active}
  - {name: west, context: nope, kubeconfig: kubeconfig, region: eu-west, role: passive}
  - {name: south, kubeconfig: bad.yaml, region: ap-south, role: standby}
  - {name: north, kubeconfig: absent.yaml, region: eu-north, role: standby}
apps:
  - {name: shop, namespace: shop, workload: deployment/shop}
safety:
  allowlist: [a, nope, south, north]
"""
DESTRUCTIVE = """
import pytest


@pytest.mark.destructive
@pytest.mark.drill(app="shop")
def test_breaks(drill):
    drill.judge(drill.app("shop"), 0.0)  # where a dry run's plan is complete
    raise AssertionError("a drill ran against a fleet that does not answer")
"""
READS = """
import pytest


@pytest.mark.drill(app="shop")
def test_reads(drill):
    drill.judge_drift("read", "nothing to compare", [])
"""


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on, held (bound, never listening) for the test: a port only looked up and
    let go may be taken by another test's server meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def write_fleet(folder: Path, server: str) -> Path:
    """DOWN_FLEET in `folder`: east's API server is `server`; west, south and north cannot be loaded."""
    (folder / "kubeconfig").write_text(KUBECONFIG.format(server=server, token=TOKEN))
    (folder / "bad.yaml").write_text(BAD_YAML)
    (folder / "fleet.yaml").write_text(DOWN_FLEET)
    return folder / "fleet.yaml"


def expected_lines(folder: Path, port: int) -> list[str]:
    """The one line of each cluster of DOWN_FLEET, east's API server on `port` of 127.0.0.1."""
    return [
        f"cluster east (context a of {folder}/kubeconfig, server https://127.0.0.1:{port}): API server "
        f"unreachable: connection refused; check {REACH}",
        f"{folder}/kubeconfig: context nope of cluster west: not in the kubeconfig (it has: a, b, certs); "
        "set clusters[1].context in the fleet file or add the context to the kubeconfig",
        f"{folder}/bad.yaml: context south of cluster south: the file does not parse as YAML (line 4, "
        "column 24: mapping values are not allowed here); fix its YAML",
        f"{folder}/absent.yaml: context north of cluster north: no such file; set clusters[3].kubeconfig in "
        "the fleet file to the kubeconfig that has the context",
    ]


@pytest.fixture
def down(tmp_path: Path, closed_port: int) -> tuple[Path, list[str]]:
    """A fleet file whose every cluster has a problem, and the line of each."""
    return write_fleet(tmp_path, f"https://127.0.0.1:{closed_port}"), expected_lines(tmp_path, closed_port)


def test_each_problem_is_one_line_naming_file_context_and_fix(down: tuple[Path, list[str]]) -> None:
    fleet_file, lines = down
    access = FleetAccess(load_fleet(fleet_file))
    problems = access.unreachable()
    assert [str(problems[name]) for name in ("east", "west", "south", "north")] == lines
    assert isinstance(problems["east"], UnreachableError)
    assert all(isinstance(problems[name], KubeconfigError) for name in ("west", "south", "north"))
    assert TOKEN not in "".join(lines), "no credential, not even from the YAML around an error"
    with pytest.raises(KubeconfigError, match=r"^\S+: context nope of cluster west: not in the kubeconfig"):
        access.api_client("west")


def test_a_context_whose_credential_files_are_missing_is_one_line(tmp_path: Path) -> None:
    fleet_file = write_fleet(tmp_path, "https://127.0.0.1:1")
    fleet_file.write_text(DOWN_FLEET.replace("context: a,", "context: certs,").replace("[a,", "[certs,"))
    with pytest.raises(KubeconfigError) as error:
        FleetAccess(load_fleet(fleet_file)).api_client("east")
    assert str(error.value) == (
        f"{tmp_path}/kubeconfig: context certs of cluster east: cannot be loaded (File does not exist: "
        f"{tmp_path}/missing.crt); fix the kubeconfig"
    )


def test_a_call_that_finds_no_server_is_a_short_cause_not_a_retry_dump(
    down: tuple[Path, list[str]],
) -> None:
    access = FleetAccess(load_fleet(down[0]))
    found = access.each(lambda name: client.CoreApi(access.api_client(name)).get_api_versions(), ["east"])
    assert (
        isinstance(found["east"], ClusterError) and str(found["east"]) == "cluster east: connection refused"
    )


@pytest.fixture
def answering() -> Iterator[Callable[[int], str]]:
    """`answering(status)`: the URL of an HTTP server answering every GET with `status`."""
    servers = []

    def start(status: int) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (401, f"the API server rejected the bearer token (HTTP 401 Unauthorized); check {REJECTED}"),
        (403, "API server unreachable: HTTP 403 Forbidden; check the context's credentials and RBAC"),
        (503, "API server unreachable: HTTP 503 Service Unavailable; check the API server's health"),
        (404, None),
        (200, None),
    ],
)
def test_an_api_server_that_refuses_the_credentials_or_fails_is_unreachable(
    tmp_path: Path, answering: Callable[[int], str], status: int, problem: str | None
) -> None:
    url = answering(status)
    access = FleetAccess(load_fleet(write_fleet(tmp_path, url)))
    found = access.unreachable(["east"])
    if problem is None:
        assert found == {}, "an API server that answers is reachable"
        return
    prefix = f"cluster east (context a of {tmp_path}/kubeconfig, server {url}): "
    assert str(found["east"]).startswith(prefix + problem)
    assert TOKEN not in str(found["east"])


def test_a_client_certificate_from_another_ca_is_named_as_the_cause(
    tmp_path: Path, answering: Callable[[int], str]
) -> None:
    """A certificate with valid dates that the cluster's CA did not issue: the API server answers 401 (it
    authenticates client certificates after the handshake), and the line names the certificate."""
    issued = pki.issue(pki.new_ca("another-ca"), "admin", organizations=("system:masters",), client=True)
    user = {"client-certificate-data": b64(issued.cert), "client-key-data": b64(issued.key)}
    fleet_file = write_fleet(tmp_path, answering(401))
    kubeconfig = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    kubeconfig["users"][0]["user"] = user
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    problem = str(FleetAccess(load_fleet(fleet_file)).unreachable(["east"])["east"])
    assert problem.endswith(
        f": the API server rejected the client certificate (HTTP 401 Unauthorized); check {REJECTED}"
    ), problem
    assert "unreachable" not in problem and "BEGIN" not in problem


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_doctor_says_each_problem_in_one_line_and_exits_1(
    down: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    fleet_file, lines = down
    assert cli.main(["doctor", "--fleet", str(fleet_file)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "MaxRetryError" not in out + err and TOKEN not in out + err
    said = ("app ", "  ok  ", "permissions", "  SKIP ", "4 problem")  # the shipped drills drill app shop
    problems = [line for line in out.splitlines() if not line.startswith(said)]
    assert len(problems) == len(lines), out
    for problem, line in zip(problems, lines, strict=True):
        assert problem.startswith("  FAIL ") and problem.endswith(f", found {line}"), problem
    assert out.splitlines()[-1] == "4 problem(s) on the DR path"


def test_fleetdrill_run_refuses_a_fleet_that_does_not_answer_in_one_line_each(
    pytester: pytest.Pytester, down: tuple[Path, list[str]]
) -> None:
    fleet_file, lines = down
    pytester.makepyfile(test_destructive=DESTRUCTIVE)
    result = pytester.run(
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--fleet",
        str(fleet_file),
        "--drills",
        str(pytester.path / "test_destructive.py"),
        "--report-dir",
        str(pytester.path / "reports"),
        "--",
        "--ledger",
        str(pytester.path / "ledger.json"),
    )
    assert result.ret == 1
    assert [line for line in result.errlines if line.strip()] == [f"ERROR: {line}" for line in lines]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "a drill ran" not in result.stdout.str() and not list(
        pytester.path.glob("reports/*/*/record.json")
    )


def test_the_plugin_checks_before_destructive_drills_only(
    pytester: pytest.Pytester, down: tuple[Path, list[str]]
) -> None:
    fleet_file, lines = down
    pytester.makepyfile(test_destructive=DESTRUCTIVE, test_reads=READS)
    options = ["--fleet", str(fleet_file), "--ledger", "ledger.json", "--report-dir", "reports"]
    refused = pytester.runpytest_subprocess(*options, "-p", "no:cacheprovider")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in refused.errlines if line.strip()] == [f"ERROR: {line}" for line in lines]
    assert "Traceback" not in refused.stdout.str() + refused.stderr.str()
    reads = pytester.runpytest_subprocess(*options, "-p", "no:cacheprovider", "test_reads.py")
    reads.assert_outcomes(passed=1)
    dry = pytester.runpytest_subprocess(*options, "-p", "no:cacheprovider", "--dry-run")
    dry.assert_outcomes(skipped=2)
