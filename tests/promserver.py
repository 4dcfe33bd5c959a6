"""A real Prometheus (the local fleet's, built from its Go module) for tests: a process on an ephemeral
port serving TLS with basic auth (--web.config.file), scraping an exporter the test serves, evaluating a
rules file.

    with running_prometheus(folder, targets=["127.0.0.1:PORT"], rules=RULES) as server:
        server.url, server.ca_file, server.username, server.password
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.localfleet import build, pki

USERNAME = "drill"
PASSWORD = "drill-pw-4c1d"
PASSWORD_HASH = "$2b$04$Po0XJj6u9IXcG6sHLQy3KuWU1hggQN3FVAQExol0xTD4Mg/fqC/la"
"""bcrypt of PASSWORD (cost 4: each request checks it), as --web.config.file's basic_auth_users wants."""
READY_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Server:
    url: str
    ca_file: Path
    username: str = USERNAME
    password: str = PASSWORD


def _free_port() -> int:
    """A port free now (Prometheus cannot report the port it bound to for :0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_prometheus(
    folder: Path, targets: list[str], rules: dict[str, object], federating: Server | None = None
) -> Iterator[Server]:
    """Prometheus scraping `targets` (or `federating`'s /federate, for every series of job "app")
    every second and evaluating `rules` every second, until the block ends; it is killed then, whatever
    happened."""
    binary = str(build.ensure_binaries(extra=(build.PROMETHEUS,))["prometheus"])
    folder.mkdir(parents=True, exist_ok=True)
    ca = pki.new_ca("fleetdrill-test-prometheus")
    ca_file = folder / "ca.crt"
    ca_file.write_bytes(ca.cert)
    cert, key = pki.issue(ca, "prometheus", ips=(ipaddress.IPv4Address("127.0.0.1"),), server=True).write(
        folder, "prometheus"
    )
    (folder / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                "basic_auth_users": {USERNAME: PASSWORD_HASH},
            }
        )
    )
    (folder / "rules.yml").write_text(yaml.safe_dump(rules))
    scrape: dict[str, object] = {"job_name": "app", "scrape_interval": "1s"}
    if federating is not None:
        targets = [federating.url.removeprefix("https://")]
        scrape |= {
            "job_name": "federate",
            "metrics_path": "/federate",
            "params": {"match[]": ['{job="app"}']},
            "honor_labels": True,
            "scheme": "https",
            "tls_config": {"ca_file": str(federating.ca_file)},
            "basic_auth": {"username": federating.username, "password": federating.password},
        }
    scrape["static_configs"] = [{"targets": targets}]
    settings = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [scrape],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(settings))
    port = _free_port()
    with (folder / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.config.file={folder / 'web.yml'}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield Server(f"https://127.0.0.1:{port}", ca_file)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
