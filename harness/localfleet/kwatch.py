"""The API side of the fleet services (ingress, GSLB): a reflector, and the Gslb resource.

The reflector lists, then watches from the list's resourceVersion with bookmarks, and keeps a store
of raw objects. It calls the client's `list_*` functions itself rather than using `watch.Watch`,
which retries a 410 once on its own and fails on ERROR events when not deserialising (clients.md).
Every list replaces the store, so objects deleted while the watch was down disappear (reconcile by
absence); 410 Gone and broken streams both lead to a fresh list.
"""

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

WATCH_S = 240
CONNECT_S = 3.0
BACKOFF_S = (0.2, 5.0)
GONE = 410
GROUP, VERSION, PLURAL = "k8gb.absa.oss", "v1beta1", "gslbs"
CHANGED_AT = "fleetdrill.io/changed-at"
CRD = Path(__file__).parent / "manifests" / "gslb-crd.yaml"
MANAGED_BY = ("app.kubernetes.io/managed-by", "fleetdrill")
STATUS_TIMEOUT_S = 3.0
REQUEST_TIMEOUT = (CONNECT_S, 30.0)
"""Connect and read timeouts of a set-up request: an API server taken away with its network namespace (an
interrupted `fleet up`) never closes the connection, and a request without them would wait forever."""

Say = Callable[[str], None]


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Reflector:
    """Mirror the objects `list_fn` returns; call on_change(self) after every change of the store."""

    def __init__(
        self, name: str, list_fn: Callable[..., Any], on_change: Callable[["Reflector"], None], say: Say
    ):
        self.name = name
        self.store: dict[str, dict] = {}
        self.synced = False
        self.error = ""
        self._list = list_fn
        self._on_change = on_change
        self._say = say

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"reflector-{self.name}", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        """List and watch forever; after an error list again, backing off while the API is unreachable."""
        delay = BACKOFF_S[0]
        while True:
            try:
                version = self._relist()
                delay = BACKOFF_S[0]
                while True:
                    version = self._watch(version)
            except Gone:
                self._say(f"{self.name}: watch expired (410 Gone), listing again")
            except Exception as error:  # any failure of the API or the stream: list again
                self._lost(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}")
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])

    def _lost(self, error: str) -> None:
        if self.synced or error != self.error:
            self._say(f"{self.name}: cannot list or watch ({error}); keeping the last known state, retrying")
        self.synced, self.error = False, error
        self._on_change(self)

    def _relist(self) -> str:
        response = self._list(_preload_content=False, _request_timeout=(CONNECT_S, 30))
        listed = json.loads(response.data)
        self.store = {_key(item): item for item in listed.get("items") or []}
        if not self.synced:
            self._say(f"{self.name}: listed {len(self.store)} object(s), watching")
        self.synced, self.error = True, ""
        self._on_change(self)
        return listed["metadata"]["resourceVersion"]

    def _watch(self, version: str) -> str:
        """Apply one watch stream's events; return the resourceVersion to resume from when it ends."""
        try:
            response = self._list(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_S,
                _preload_content=False,
                _request_timeout=(CONNECT_S, WATCH_S + 30),
            )
        except ApiException as error:
            if error.status == GONE:
                raise Gone from error
            raise
        try:
            for line in iter_resp_lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == GONE:
                        raise Gone
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.store.pop(_key(obj), None)
                else:
                    self.store[_key(obj)] = obj
                self._on_change(self)
        finally:
            response.close()
            response.release_conn()
        return version


def _key(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def install_crd(api: client.ApiClient, deadline_s: float = 30.0) -> None:
    """Create or update the Gslb CRD, then wait until it is Established; leave alone one we did not make."""
    body = yaml.safe_load(CRD.read_text())
    name, crds = body["metadata"]["name"], client.ApiextensionsV1Api(api)
    try:
        crds.create_custom_resource_definition(body, _request_timeout=REQUEST_TIMEOUT)
    except client.ApiException as error:
        if error.status != 409:
            raise
        current = crds.read_custom_resource_definition(name, _request_timeout=REQUEST_TIMEOUT)
        if (current.metadata.labels or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]:
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            crds.replace_custom_resource_definition(name, body, _request_timeout=REQUEST_TIMEOUT)

    def established() -> bool:
        crd = crds.read_custom_resource_definition(name, _request_timeout=REQUEST_TIMEOUT)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    deadline = time.monotonic() + deadline_s
    while not established():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Gslb CRD is not Established after {deadline_s} s")
        time.sleep(0.1)


def _time(stamp: str) -> datetime:
    """An RFC 3339 time; one without a zone is taken as UTC."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def changed_at(obj: dict) -> datetime:
    """When the object was last changed: the `fleetdrill.io/changed-at` annotation (RFC 3339), else the
    latest managedFields time outside the status subresource, else its creationTimestamp."""
    meta = obj["metadata"]
    stamp = (meta.get("annotations") or {}).get(CHANGED_AT)
    if stamp:
        with contextlib.suppress(ValueError):  # unreadable: fall back to managedFields
            return _time(stamp)
    times = [
        m["time"] for m in meta.get("managedFields") or [] if m.get("subresource") != "status" and "time" in m
    ]
    return max((_time(t) for t in times), default=_time(meta["creationTimestamp"]))


def choose(views: dict[str, dict | None]) -> tuple[str, dict] | None:
    """The (context, object) changed most recently; on a tie the earlier context (views keep their order)."""
    present = [(changed_at(obj), -i, ctx, obj) for i, (ctx, obj) in enumerate(views.items()) if obj]
    return max(present, key=lambda p: p[:2])[2:] if present else None


def gslb_lister(api: client.ApiClient, namespace: str, name: str) -> Callable[..., Any]:
    """The list function of one Gslb object, for a Reflector."""
    return functools.partial(
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        field_selector=f"metadata.name={name}",
    )


def patch_gslb_status(api: client.ApiClient, namespace: str, name: str, status: dict) -> None:
    """Merge the status subresource (outside spec, so `changed_at` ignores it)."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
        _request_timeout=STATUS_TIMEOUT_S,
    )
