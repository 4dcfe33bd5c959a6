"""A drill outlives its credentials: every user of the fleet's kubeconfig becomes an exec credential plugin
that hands out a client certificate from the fleet's CA, for the same identity, valid for LIFETIME_S
(cloud credentials live 15 minutes to an hour; the drill about 50 s). The active-passive drill passes, and
the plugin was run again mid-drill, after its first credentials had expired."""

import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.integration.test_drills import run_drill
from tests.unit.test_auth import exec_user

LIFETIME_S = 20


def exec_kubeconfig(fleet: Path, log: Path) -> Path:
    """The fleet's kubeconfig with each user's client certificate replaced by the exec plugin, issuing to
    the certificate's user and groups; written beside it (owner-only)."""
    config = yaml.safe_load((fleet / "kubeconfig").read_text())
    for entry in config["users"]:
        cert = x509.load_pem_x509_certificate(Path(entry["user"]["client-certificate"]).read_bytes())
        user = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        more = ["--user", str(user), "--name", entry["name"], *(f"--group={group}" for group in groups)]
        entry["user"] = exec_user(log, LIFETIME_S, fleet / "pki", *more)
    path = fleet / "kubeconfig-exec"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def issuances(log: Path, velero: bool = False) -> dict[str, list[float]]:
    """When the plugin handed out each user's credentials to the harness (or to the velero CLI)."""
    issued: dict[str, list[float]] = defaultdict(list)
    for line in log.read_text().splitlines():
        at, _, name, program = line.split()
        if (program == "velero") == velero:
            issued[name].append(float(at))
    return issued


def exec_fleet_file(fleet: Path, log: Path) -> str:
    """The fleet's fleet file with the exec kubeconfig (fleet-exec.yaml, beside it); its name."""
    document = yaml.safe_load((fleet / "fleet.yaml").read_text())
    document["kubeconfig"] = exec_kubeconfig(fleet, log).name
    (fleet / "fleet-exec.yaml").write_text(yaml.safe_dump(document))
    return "fleet-exec.yaml"


def test_a_drill_outlives_its_exec_plugin_credentials(drill_fleet: Path, tmp_path: Path) -> None:
    log = tmp_path / "plugin.log"
    started = time.time()
    drill = "test_active_passive.py"
    done, record = run_drill(
        drill_fleet, tmp_path / "reports", drill, fleet_file=exec_fleet_file(drill_fleet, log)
    )
    took = time.time() - started
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    issued = issuances(log)
    counts = {name: len(times) for name, times in issued.items()}
    print(f"drill {took:.1f} s; {LIFETIME_S} s credentials issued per user: {counts}", file=sys.stderr)
    assert took > 2 * LIFETIME_S, f"the drill took {took:.1f} s: not long enough to outlive a credential"
    renewed = {name: times for name, times in issued.items() if times[-1] - times[0] > LIFETIME_S}
    assert renewed, f"no plugin ran again after its first credential expired: {dict(issued)}"
    assert max(len(times) for times in renewed.values()) >= 3, dict(issued)
