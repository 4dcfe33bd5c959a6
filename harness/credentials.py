"""Credentials on the DR path and when they expire: kubeconfig client certificates and tokens, the CA a
kubeconfig trusts, and an API server's serving certificate (read from a TLS handshake).

Only lifetimes are read out: no secret value ever appears in a result or a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from harness import execplugin
from harness.kubeconfig import named


@dataclass(frozen=True)
class Expiry:
    """One credential: what it is, and when it stops being valid (None: it states no end).

    problem says why it could not be used at all (missing, unreadable); then not_after is None.
    """

    what: str
    not_after: datetime | None
    problem: str | None = None


def certificate_expiry(data: bytes) -> datetime:
    """The notAfter of a PEM or DER certificate (the first one of a PEM bundle); ValueError if unreadable."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data).not_valid_after_utc
    return x509.load_der_x509_certificate(data).not_valid_after_utc


def jwt_expiry(token: str) -> datetime | None:
    """The `exp` of a JWT bearer token; None when the token is not a JWT or states no expiry."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return datetime.fromtimestamp(exp, UTC)
    return None


@dataclass(frozen=True)
class KubeconfigEntry:
    """What a kubeconfig context uses: its server URL and its credentials' lifetimes."""

    context: str
    server: str
    credentials: tuple[Expiry, ...]


def _material(section: dict[str, Any], field: str, base: Path) -> bytes | None:
    """Inline `<field>-data` (base64) or the file `<field>`; None when neither is set."""
    if section.get(f"{field}-data"):
        return base64.b64decode(section[f"{field}-data"])
    if section.get(field):
        return (base / Path(section[field]).expanduser()).read_bytes()
    return None


def _certificate(what: str, section: dict[str, Any], field: str, base: Path) -> Expiry | None:
    try:
        data = _material(section, field, base)
        return None if data is None else Expiry(what, certificate_expiry(data))
    except (OSError, ValueError, binascii.Error) as exc:
        return Expiry(what, None, f"unreadable ({type(exc).__name__})")


def _token(user: dict[str, Any], base: Path) -> Expiry | None:
    if user.get("token"):
        return Expiry("bearer token", jwt_expiry(str(user["token"])))
    if user.get("tokenFile"):
        try:
            text = (base / Path(user["tokenFile"]).expanduser()).read_text()
        except OSError as exc:
            return Expiry(f"token file {user['tokenFile']}", None, f"unreadable ({exc.strerror})")
        return Expiry(f"token file {user['tokenFile']}", jwt_expiry(text))
    return None


def kubeconfig_entry(path: Path, context: str) -> KubeconfigEntry:
    """The server and credentials of `context` in the kubeconfig at `path`; ValueError naming what is
    missing when the file or the context cannot be read."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"kubeconfig {path} unreadable: {type(exc).__name__}") from None
    if not isinstance(config, dict):
        raise ValueError(f"kubeconfig {path} is not a mapping of clusters, contexts and users")
    ctx = named(config, "contexts", context)
    if ctx is None:
        raise ValueError(f"kubeconfig {path} has no context {context!r}")
    cluster = named(config, "clusters", str(ctx.get("cluster")))
    user = named(config, "users", str(ctx.get("user")))
    if cluster is None or user is None:
        raise ValueError(f"kubeconfig {path}: context {context!r} names a missing cluster or user")
    base = path.parent
    found = [
        _certificate("trusted CA certificate", cluster, "certificate-authority", base),
        _certificate("client certificate", user, "client-certificate", base),
        _token(user, base),
    ]
    if isinstance(user.get("exec"), dict):
        found.append(exec_plugin(user["exec"], base))
    credentials = tuple(item for item in found if item is not None)
    if not any(e.what != "trusted CA certificate" for e in credentials):
        credentials += (Expiry("client credential", None, "none (no certificate, token or exec plugin)"),)
    return KubeconfigEntry(context, str(cluster.get("server", "")), credentials)


def exec_plugin(spec: dict[str, Any], base: Path, timeout_s: float = execplugin.TIMEOUT_S) -> Expiry:
    """Run a kubeconfig user's exec credential plugin unattended (execplugin.run): it must hand out a
    credential that has not expired yet, in time, without a person. Only whether it did is kept: no
    credential it printed reaches a result. The harness runs it again before each credential expires
    (harness.auth), so a short lifetime is not a problem (not_after None)."""
    what = f"exec credential plugin {spec.get('command') or ''}"
    try:
        issued = execplugin.run(spec, base, timeout_s=timeout_s)
    except execplugin.PluginError as error:
        return Expiry(what, None, str(error))
    ends = [issued.expires] if issued.expires is not None else []
    if issued.cert is not None:
        try:
            ends.append(certificate_expiry(issued.cert))
        except ValueError:
            return Expiry(what, None, "handed out a client certificate that is not PEM")
    now = datetime.now(UTC)
    if ends and min(ends) <= now:
        return Expiry(
            what,
            None,
            f"handed out a credential that had already expired ({min(ends):%Y-%m-%d %H:%M:%S} UTC)",
        )
    return Expiry(what, None)


def serving_certificate(server: str, timeout_s: float = 5.0) -> Expiry:
    """The serving certificate of the HTTPS server at `server`, read from a TLS handshake (not verified:
    only its lifetime is read)."""
    what = f"serving certificate of {server}"
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        return Expiry(what, None, "not an https:// server URL")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        return Expiry(what, None, f"TLS handshake failed ({type(exc).__name__}: {exc})")
    if not der:
        return Expiry(what, None, "the server sent no certificate")
    return Expiry(what, certificate_expiry(der))
