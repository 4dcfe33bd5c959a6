"""Every kubernetes client the harness makes, authenticated as the kubeconfig says, with credentials kept
fresh for the whole drill.

The kubernetes client loads a kubeconfig once. For a user whose exec credential plugin hands out a client
certificate it writes the certificate to a file once and never runs the plugin again, and its urllib3 pool
keeps connecting with that file; a token it renews only from five minutes before its expiry, on every call
from then on; and any copy of a credential taken outside its Configuration (the service proxy's headers)
goes stale (kubernetes-client/python#741). So a ClusterAuth runs the plugin itself (harness.execplugin:
unattended, with a deadline) and again before each credential expires, with a margin, or once the API
server has answered 401 Unauthorized to it (revoked before its stated expiry: renewed for the next call, as
client-go does); its ApiClients ask it before every call and reconnect when the client certificate
changes; the service proxy reads the credential it holds per request (RequestAuth). Everything else a
kubeconfig can say (certificates, tokens, token files, auth providers) the kubernetes client loads as it
always does.
"""

from __future__ import annotations

import copy
import os
import shutil
import ssl
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from kubernetes import client, config
from kubernetes.client import rest
from kubernetes.config.kube_config import KubeConfigLoader

from harness import execplugin, kubeconfig

RETRY_S = 1.0
"""After a failed renewal, `due` waits this long before asking for another."""
MARGIN_S = 60.0
MARGIN_SHARE = 0.25
"""A credential is renewed min(MARGIN_S, MARGIN_SHARE x its lifetime) before it expires: a minute for an
EKS token (15 minutes), 5 s for a credential of 20 s."""
REJECTED_GAP_S = 10.0
"""A 401 Unauthorized renews the credential at most this often: a server that keeps refusing it (or an app
behind the service proxy that answers 401 itself) does not run the plugin on every request."""
STATIC = ("auth-provider", "token", "tokenFile")
"""What the kubernetes client uses before a user's exec plugin (kube_config._load_authentication)."""
CREDENTIALS = (
    (("auth-provider",), "auth provider's token"),
    (("token", "tokenFile"), "bearer token"),
    (("client-certificate", "client-certificate-data"), "client certificate"),
    (("username",), "basic-auth password"),
)
"""A kubeconfig user's credential, by its keys, as a message names it (the first the user has)."""


class RequestAuth(Protocol):
    """What a request made outside the kubernetes client (the service proxy's) carries: read per request,
    never kept, so a renewed credential is used from the next request on. Reading never blocks; renewing
    (fresh) may run a plugin, so an event loop calls it off the loop when `due`."""

    def due(self) -> bool:
        """The credential is to be renewed (fresh) now."""

    def fresh(self) -> None:
        """Renew the credential if it is due (or none was handed out yet)."""

    def headers(self) -> dict[str, str]:
        """The credential's headers (Authorization), as of now."""

    def issued(self) -> int:
        """The number of the credential handed out now (each renewal adds one), for `rejected`."""

    def rejected(self, issued: int) -> None:
        """The server answered 401 Unauthorized to the credential numbered `issued`: renew it when next asked
        (due, fresh) unless it has been renewed since. Never blocks."""

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for a new connection (the kubeconfig's CA, the client certificate as of now); None for an
        http:// server."""


def _first_line(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters."""
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


class ClusterAuth:
    """One kubeconfig context: its client Configuration, and the exec plugin's credential renewed before it
    expires. Not a record: it holds the credential (never logged)."""

    def __init__(self, ref: kubeconfig.ContextRef, plugin_timeout_s: float = execplugin.TIMEOUT_S) -> None:
        """KubeconfigError (one line naming file and context) when the context cannot be loaded."""
        found = kubeconfig.read(ref)
        context = kubeconfig.named(found, "contexts", ref.context) or {}
        user = kubeconfig.named(found, "users", context.get("user")) or {}
        self.ref, self._timeout, self._user = ref, plugin_timeout_s, user
        self._cluster = kubeconfig.named(found, "clusters", context.get("cluster")) or {}
        exec_spec = user.get("exec")
        self._plugin = (
            exec_spec if isinstance(exec_spec, dict) and not any(user.get(k) for k in STATIC) else None
        )
        self.configuration = client.Configuration()
        try:
            loader = KubeConfigLoader(
                self._without_plugin(found, context.get("user")),
                active_context=ref.context,
                config_base_path=str(ref.path.parent),
            )
            loader.load_and_set(self.configuration)
        except (config.ConfigException, OSError, ValueError) as error:  # e.g. a missing cert file
            raise ref.error(f"cannot be loaded ({_first_line(error)})", "fix the kubeconfig") from None
        self._lock = threading.Lock()
        self._renew_at: float | None = None  # None: nothing handed out yet
        self._retry_at = 0.0
        self._folder: Path | None = None
        self._tls: tuple[int, ssl.SSLContext | None] | None = None
        self._tls_lock = threading.Lock()
        self.generation = 0
        """How many client certificates the plugin has handed out: a connection made with an older one is
        dropped."""
        self._issued = 0  # how many credentials the plugin has handed out
        self._rejected_at = float("-inf")
        if self._plugin is not None:  # whoever reads the Configuration's token renews it first
            self.configuration.refresh_api_key_hook = lambda _settings: self.fresh()

    def _without_plugin(self, found: dict[str, Any], user_name: object) -> dict[str, Any]:
        """The kubeconfig for the kubernetes client: the user's exec section left out when this runs it."""
        if self._plugin is None:
            return found
        stripped = copy.deepcopy(found)
        (kubeconfig.named(stripped, "users", user_name) or {}).pop("exec", None)  # the one the client reads
        return stripped

    def due(self) -> bool:
        """An exec plugin's credential is within its margin of expiry (and no renewal failed just now)."""
        if self._plugin is None:
            return False
        now = time.time()
        return (self._renew_at is None or now >= self._renew_at) and now >= self._retry_at

    def fresh(self) -> None:
        """Run the exec plugin when it has handed out nothing yet or its credential is within its margin of
        expiry (no plugin: nothing to do); KubeconfigError naming the cluster when it gives none, or one
        that has already expired."""
        if self._plugin is None:
            return
        with self._lock:
            now = time.time()
            if self._renew_at is not None and now < self._renew_at:
                return
            what = f"exec credential plugin {self._plugin.get('command') or ''}"
            try:
                issued = execplugin.run(self._plugin, self.ref.path.parent, self._cluster, self._timeout)
                ends = [e.timestamp() for e in self._ends(issued)]
            except execplugin.PluginError as error:
                self._retry_at = time.time() + RETRY_S
                raise self.ref.error(f"{what}: {error}", "fix the plugin or its login") from None
            end = min(ends, default=None)
            if end is not None and end <= now:
                self._retry_at = time.time() + RETRY_S
                raise self.ref.error(
                    f"{what} handed out a credential that had already expired "
                    f"({datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M:%S} UTC)",
                    "check the plugin's login and this machine's clock",
                )
            self._use(issued)
            self._renew_at = float("inf") if end is None else end - min(MARGIN_S, MARGIN_SHARE * (end - now))

    @staticmethod
    def _ends(issued: execplugin.Issued) -> list[datetime]:
        """When the credential stops working: its expirationTimestamp, and a certificate's notAfter."""
        ends = [issued.expires] if issued.expires is not None else []
        if issued.cert is not None:
            try:
                ends.append(x509.load_pem_x509_certificate(issued.cert).not_valid_after_utc)
            except ValueError:
                raise execplugin.PluginError("handed out a client certificate that is not PEM") from None
        return ends

    def issued(self) -> int:
        """The number of the credential handed out now (each renewal adds one; 0 without a plugin)."""
        return self._issued

    def rejected(self, issued: int) -> None:
        """The API server answered 401 Unauthorized to the credential numbered `issued`, which may have been
        revoked before its stated expiry: the next call renews it, unless it was renewed since or a 401
        renewed it less than REJECTED_GAP_S ago. No lock: a renewal under way may hold it for seconds."""
        now = time.time()
        if self._plugin is None or issued != self._issued or now < self._rejected_at + REJECTED_GAP_S:
            return
        self._rejected_at, self._renew_at = now, None

    def _use(self, issued: execplugin.Issued) -> None:
        """Put the credential into the Configuration (a certificate into files of its own, owner-only)."""
        self._issued += 1
        if issued.token is not None:
            self.configuration.api_key["BearerToken"] = f"Bearer {issued.token}"
            return
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="fleetdrill-auth-"))
        number = self.generation + 1
        cert, key = self._folder / f"client-{number}.crt", self._folder / f"client-{number}.key"
        _write_private(cert, issued.cert or b"")
        _write_private(key, issued.key or b"")
        self.configuration.cert_file, self.configuration.key_file = str(cert), str(key)
        self.generation = number  # last: whoever sees the new number finds the new files
        for stale in (f"client-{number - 2}.crt", f"client-{number - 2}.key"):
            (self._folder / stale).unlink(missing_ok=True)  # the one before may still be connecting

    def credential(self) -> str:
        """Which credential the context authenticates with, for a message (never its value)."""
        if self._plugin is not None:
            kind = "client certificate" if self.configuration.cert_file else "token" if self.headers() else ""
            plugin = self._plugin.get("command") or ""
            return f"the {kind or 'credential'} exec credential plugin {plugin} handed out"
        for keys, kind in CREDENTIALS:
            if any(self._user.get(key) for key in keys):
                return f"the {kind}"
        return "the anonymous request (the context has no credential)"

    def headers(self) -> dict[str, str]:
        """The Authorization header as of now (none for a client certificate); never renews it."""
        keys = self.configuration.api_key  # the kubernetes client (36+) keeps it under BearerToken; older
        token = keys.get("BearerToken") or keys.get("authorization")  # code set "authorization" (#2595)
        return {"Authorization": token} if token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS with the kubeconfig's CA and the client certificate as of now (one context per certificate);
        None for an http:// server. Never renews it."""
        with self._tls_lock:  # not the renewal's lock: a renewal running a plugin does not hold this up
            generation = self.generation
            if self._tls is None or self._tls[0] != generation:
                self._tls = (generation, self._new_ssl_context())
            return self._tls[1]

    def _new_ssl_context(self) -> ssl.SSLContext | None:
        settings = self.configuration
        if not settings.host.startswith("https"):
            return None
        context = ssl.create_default_context(cafile=settings.ssl_ca_cert)
        if not settings.verify_ssl:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        return context

    def api_client(self) -> client.ApiClient:
        """An ApiClient on this context that renews the credential before each call."""
        return FreshApiClient(self)

    def close(self) -> None:
        """Remove the plugin's certificate files."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


class FreshApiClient(client.ApiClient):
    """An ApiClient that asks its ClusterAuth for a fresh credential before every call (watches and streams
    included: they are calls too), and connects anew once the client certificate has changed: an open
    connection keeps the certificate it was made with, and the API server checks it on every request."""

    def __init__(self, auth: ClusterAuth) -> None:
        super().__init__(auth.configuration)
        self.auth = auth
        self._generation = auth.generation
        self._swap = threading.Lock()

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        self.auth.fresh()
        if self._generation != self.auth.generation:
            with self._swap:
                generation = self.auth.generation
                if self._generation != generation:
                    old, self.rest_client = self.rest_client, rest.RESTClientObject(self.configuration)
                    self._generation = generation
                    old.pool_manager.clear()  # idle connections close now, busy ones when they are done
        issued = self.auth.issued()
        try:
            return super().call_api(*args, **kwargs)
        except client.ApiException as error:
            if error.status == 401:
                self.auth.rejected(issued)
            raise


def in_cluster() -> client.ApiClient | None:
    """A client as the pod this runs in (its service account, whose token the kubernetes client rereads
    from the projected file every minute); None outside a pod."""
    settings = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=settings)
    except config.ConfigException:
        return None
    return client.ApiClient(settings)
