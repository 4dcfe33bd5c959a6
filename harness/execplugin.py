"""A kubeconfig user's exec credential plugin (aws eks get-token, gke-gcloud-auth-plugin, kubelogin), run
as client-go runs it but unattended: no terminal, stdin closed, a deadline. A plugin that needs a person (a
terminal, a device-code login) is refused without running.

What it hands out (a token, or a client certificate and key) is returned to the caller only; no message
ever holds it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.report.redact import redact

TIMEOUT_S = 30.0
DEVICE_CODE = ("devicecode", "device-code", "--use-device-code")
"""Arguments of a plugin that logs in with a device code (kubelogin --login devicecode, `az aks
get-credentials`' default): it prints a code and waits for a person."""
BROWSER_LOGIN = ("interactive",)
"""Login modes (kubelogin --login/-l MODE) that open a browser and wait for a person."""
CONVERT = (
    "convert the kubeconfig to a non-interactive login (kubelogin convert-kubeconfig -l azurecli, spn, msi "
    "or workloadidentity)"
)
"""The fix for kubelogin's logins that wait for a person."""
UNATTENDED = (
    "give it a login that needs no person (a service account or principal, workload identity; for "
    "kubelogin: kubelogin convert-kubeconfig -l azurecli, spn, msi or workloadidentity), or log in on this "
    "machine before the drill so it has a cached token"
)
"""The fix for any plugin found waiting for a person."""
WAITING = {
    "device code": ("devicelogin", "device code", "enter the code"),
    "browser": ("browser", "open the url", "visit the url", "localhost:8000"),
}
"""What a plugin that waits for a person says on stderr meanwhile (lower case), by what it waits for."""


class PluginError(Exception):
    """The plugin could not hand out a credential; the message says why (no credential in it)."""


@dataclass(frozen=True)
class Issued:
    """One credential a plugin handed out: a token, or a PEM client certificate and key; when it expires
    (None: it states no end, so it is used until the plugin is asked again)."""

    token: str | None = field(default=None, repr=False)
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    expires: datetime | None = None


def _cluster_info(cluster: dict[str, Any], base: Path) -> dict[str, Any]:
    """spec.cluster of ExecCredential (provideClusterInfo: true), as client-go fills it."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    if cluster.get("certificate-authority-data"):
        info["certificate-authority-data"] = cluster["certificate-authority-data"]
    elif cluster.get("certificate-authority"):
        data = (base / Path(cluster["certificate-authority"]).expanduser()).read_bytes()
        info["certificate-authority-data"] = base64.b64encode(data).decode()
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url"):
        if key in cluster:
            info[key] = cluster[key]
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = extension.get("extension")
    return info


def refusal(spec: dict[str, Any]) -> str | None:
    """Why the plugin cannot run unattended (it needs a person), or None."""
    if spec.get("interactiveMode") == "Always":
        return "needs a terminal (interactiveMode: Always): a scheduled drill cannot log in"
    args = [str(arg).lower() for arg in spec.get("args") or []]
    if any(arg in DEVICE_CODE for arg in args):
        return f"logs in with a device code, which waits for a person: {CONVERT}"
    modes = [mode for flag, mode in zip(args, [*args[1:], ""], strict=True) if flag in ("--login", "-l")]
    modes += [arg.split("=", 1)[1] for arg in args if arg.startswith("--login=")]
    if any(mode in BROWSER_LOGIN for mode in modes):
        return f"logs in through a browser, which waits for a person: {CONVERT}"
    return None


def _waits_for(stderr: str | bytes | None) -> str | None:
    """What a plugin that ran out of time was waiting for, by what it printed on stderr meanwhile."""
    text = (stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or "").lower()
    return next((what for what, says in WAITING.items() if any(said in text for said in says)), None)


def run(
    spec: dict[str, Any], base: Path, cluster: dict[str, Any] | None = None, timeout_s: float = TIMEOUT_S
) -> Issued:
    """Run the plugin of a kubeconfig user's `exec` section (a relative command with a slash is taken from
    `base`, the kubeconfig's folder, as client-go does); PluginError when it gives no usable credential."""
    if (why := refusal(spec)) is not None:
        raise PluginError(why)
    command = str(spec.get("command") or "")
    args = [str(arg) for arg in spec.get("args") or []]
    program = str(base / command) if "/" in command and not Path(command).is_absolute() else command
    info: dict[str, Any] = {"interactive": False}
    if spec.get("provideClusterInfo") and cluster is not None:
        info["cluster"] = _cluster_info(cluster, base)
    api_version = spec.get("apiVersion")
    env = {**os.environ, **{str(e.get("name")): str(e.get("value")) for e in spec.get("env") or []}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": info}
    )
    try:
        done = subprocess.run(
            [program, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=base,
        )
    except FileNotFoundError:
        hint = f" ({spec['installHint'].strip().splitlines()[0]})" if spec.get("installHint") else ""
        raise PluginError(f"{command!r} is not installed on this machine{hint}") from None
    except subprocess.TimeoutExpired as expired:
        waits = _waits_for(expired.stderr)
        if waits is not None:
            raise PluginError(
                f"gave no credential within {timeout_s:g} s: it waits for a {waits} login, which needs a "
                f"person: {UNATTENDED}"
            ) from None
        raise PluginError(f"gave no credential within {timeout_s:g} s (does it wait for a login?)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise PluginError(f"exited {done.returncode}: {redact(last)[:300]}")
    return _issued(done.stdout, api_version)


def _issued(stdout: str, api_version: object) -> Issued:
    """The credential of a plugin's ExecCredential output."""
    try:
        printed = json.loads(stdout)
    except ValueError:
        printed = None
    status = printed.get("status") if isinstance(printed, dict) else None
    if not isinstance(status, dict) or not (status.get("token") or status.get("clientCertificateData")):
        raise PluginError("printed no ExecCredential with a token or client certificate")
    if printed.get("apiVersion") != api_version:
        raise PluginError(
            f"printed apiVersion {printed.get('apiVersion')!r}, not the kubeconfig's {api_version!r}"
        )
    expires = None
    if status.get("expirationTimestamp"):
        try:
            expires = datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise PluginError("printed an expirationTimestamp that is not an RFC 3339 time") from None
        if expires.tzinfo is None:
            raise PluginError("printed an expirationTimestamp without a time zone")
    if status.get("token"):
        return Issued(token=str(status["token"]), expires=expires)
    if not status.get("clientKeyData"):
        raise PluginError("printed a client certificate without its clientKeyData")
    cert, key = str(status["clientCertificateData"]).encode(), str(status["clientKeyData"]).encode()
    return Issued(cert=cert, key=key, expires=expires)
