"""A kubeconfig's exec credential plugin, checked as the kubernetes client runs it, unattended: it must
hand out a credential in time, without a person; no credential it prints reaches a result."""

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import cli
from harness.credentials import exec_plugin
from harness.localfleet import pki
from tests.unit.test_auth import exec_user, write_kubeconfig

CREDENTIAL = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}


def plugin(folder: Path, body: str) -> dict:
    """An exec section running a Python script with `body`."""
    script = folder / "plugin.py"
    script.write_text(f"import json, os, sys, time\n{body}\n")
    return {"apiVersion": CREDENTIAL["apiVersion"], "command": sys.executable, "args": [str(script)]}


def test_a_plugin_that_hands_out_a_token_passes_and_the_token_stays_out(tmp_path: Path) -> None:
    expires = (datetime.now(UTC) + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")  # EKS's lifetime
    status = {"token": "secret-token-value", "expirationTimestamp": expires}
    body = "assert not json.loads(os.environ['KUBERNETES_EXEC_INFO'])['spec']['interactive']\n"
    body += f"assert sys.stdin.read() == ''\nprint(json.dumps({ {**CREDENTIAL, 'status': status}!r}))"
    found = exec_plugin(plugin(tmp_path, body), tmp_path)
    assert found.problem is None and found.not_after is None, found  # the client renews it when it expires
    assert "secret-token-value" not in repr(found)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("sys.exit('error: AccessDenied for Bearer abcdefgh12345678')", "exited 1: error: AccessDenied"),
        ("print('not json')", "printed no ExecCredential with a token or client certificate"),
        ("time.sleep(30)", "gave no credential within 3 s (does it wait for a login?)"),
        (  # kubelogin --login devicecode, az aks get-credentials' default
            "print('To sign in, use a web browser to open the page https://microsoft.com/devicelogin and "
            "enter the code ABC123 to authenticate.', file=sys.stderr); time.sleep(30)",
            "gave no credential within 3 s: it waits for a device code login, which needs a person: give it",
        ),
        (  # int128/kubelogin (kubectl oidc-login) without a cached token
            "print('Please visit the following URL in your browser: http://localhost:8000', file=sys.stderr)"
            "; time.sleep(30)",
            "gave no credential within 3 s: it waits for a browser login, which needs a person: give it",
        ),
    ],
)
def test_a_plugin_that_fails_is_one_line_saying_how(tmp_path: Path, body: str, problem: str) -> None:
    found = exec_plugin(plugin(tmp_path, body), tmp_path, timeout_s=3.0)  # a Python start on a loaded runner
    assert found.problem is not None and found.problem.startswith(problem), found
    assert "abcdefgh12345678" not in found.problem


def test_a_plugin_that_needs_a_person_is_refused_without_running(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    spec = plugin(tmp_path, f"open({str(ran)!r}, 'w')")
    assert "needs a terminal" in str(exec_plugin(spec | {"interactiveMode": "Always"}, tmp_path).problem)
    device = spec | {"args": [*spec["args"], "get-token", "--login", "devicecode", "--server-id", "x"]}
    assert "kubelogin convert-kubeconfig" in str(exec_plugin(device, tmp_path).problem)
    for login in (["--login", "interactive"], ["-l", "interactive"], ["--login=interactive"]):
        browser = spec | {"args": [*spec["args"], "get-token", *login, "--server-id", "x"]}
        problem = str(exec_plugin(browser, tmp_path).problem)
        assert problem.startswith("logs in through a browser") and "convert-kubeconfig" in problem, problem
    assert not ran.exists()


def test_a_plugin_not_installed_says_so_with_its_install_hint(tmp_path: Path) -> None:
    spec = {"command": "aws-not-here", "args": ["eks", "get-token"], "installHint": "Install the AWS CLI.\n"}
    found = exec_plugin(spec, tmp_path)
    assert found.problem == "'aws-not-here' is not installed on this machine (Install the AWS CLI.)"


@pytest.mark.parametrize("ca", [False, True], ids=["token", "client certificate"])
def test_a_plugin_that_hands_out_an_expired_credential_fails(tmp_path: Path, ca: bool) -> None:
    authority = None
    if ca:
        authority = tmp_path / "pki"
        pki.new_ca("unit").write(authority, "ca")
    spec = exec_user(tmp_path / "plugin.log", -60, authority)["exec"]
    found = exec_plugin(spec, tmp_path)
    assert str(found.problem).startswith("handed out a credential that had already expired ("), found
    assert "token-1" not in str(found.problem) and "BEGIN" not in str(found.problem)


DR_FLEET = """
name: unit
kubeconfig: kubeconfig
clusters:
  - {name: east, context: east, region: us-east, role: active}
apps:
  - {name: shop, namespace: shop, workload: deployment/shop}
"""


def test_doctor_fails_an_expired_exec_credential_on_the_dr_path_naming_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    authority = tmp_path / "pki"
    pki.new_ca("unit").write(authority, "ca")
    user = exec_user(tmp_path / "plugin.log", -60, authority)
    write_kubeconfig(tmp_path, "https://127.0.0.1:1", user, (authority / "ca.crt").read_bytes())
    (tmp_path / "fleet.yaml").write_text(DR_FLEET)
    assert cli.main(["doctor", "--fleet", str(tmp_path / "fleet.yaml")]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "already expired" in line)
    assert line.startswith("  FAIL east: kubeconfig context: expected usable, found "), line
    assert f"{tmp_path}/kubeconfig: context east of cluster east: exec credential plugin " in line
    assert line.endswith("check the plugin's login and this machine's clock"), line
    assert "BEGIN" not in out and "Traceback" not in out
