"""Chaos Mesh faults: a NetworkChaos, StressChaos or PodChaos object in each target cluster, through the API.

inject creates the object and waits, with a deadline, until Chaos Mesh reports it Selected and
AllInjected; revert deletes it and waits until it is gone (Chaos Mesh's finalizer recovers every target
first). The object's name derives from the fault's key, so a revert after a crash finds it. Works
against any cluster that runs Chaos Mesh, the local fleet's included.

    NetworkChaosFault(targets=("us-east",), namespace="orders",
                      spec={"action": "partition", "mode": "all", "direction": "both",
                            "selector": {"labelSelectors": {"app": "orders"}},
                            "externalTargets": ("198.18.1.0/26",)})
"""

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from kubernetes import client

from harness.errors import FleetDrillError
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.evidence import all_of
from harness.permissions import APP, verbs
from harness.timeline import Event

GROUP, VERSION = "chaos-mesh.org", "v1alpha1"
POLL_S = 0.05


class ChaosMeshError(FleetDrillError):
    """Chaos Mesh did not inject or remove a fault in time; the message carries its records' words."""


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_thawed(v) for v in value]
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    return value


def _condition(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _last_words(obj: dict) -> str:
    """The last event of each record, or why nothing was selected."""
    status = obj.get("status") or {}
    words = [
        f"{r['id']}: {r['phase']}, {r['events'][-1].get('message', r['events'][-1]['type'])}"
        for r in (status.get("experiment") or {}).get("containerRecords") or []
        if r.get("events")
    ]
    reason = next(
        (c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Selected"), ""
    )
    return "; ".join(words) or reason or "no status written yet (is Chaos Mesh running?)"


@dataclass(frozen=True, kw_only=True)
class ChaosMeshFault(Fault):
    """A Chaos Mesh object of `chaos_kind` in `namespace` with `spec`, in every target cluster."""

    chaos_kind: ClassVar[str] = ""
    plural: ClassVar[str] = ""
    namespace: str
    spec: dict[str, Any]
    deadline_s: float = 60.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A kind's permissions: its Chaos Mesh objects in the namespace the drills give it (the app's)."""
        super().__init_subclass__(**kwargs)
        cls.permissions = verbs("create get delete", cls.plural, GROUP, APP)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "spec", _frozen(self.spec))
        if not isinstance(self.namespace, str) or not self.namespace:
            raise TypeError(f"{self.kind}: expected a namespace, got {self.namespace!r}")

    @property
    def name(self) -> str:
        return f"fleetdrill-{self.key}"

    def body(self) -> dict:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.chaos_kind,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "fleetdrill"},
            },
            "spec": _thawed(self.spec),
        }

    def _api(self, ctx: FaultContext, cluster: str) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(ctx.api_client(cluster))

    def _read(self, api: client.CustomObjectsApi) -> dict | None:
        try:
            return api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, self.name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = self._api(ctx, cluster)
            try:
                api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, self.body())
            except client.ApiException as error:
                if error.status != 409:
                    raise ChaosMeshError(
                        f"{cluster}: cannot create {self.chaos_kind} {self.namespace}/{self.name}: "
                        f"{error.status} {error.reason}"
                    ) from None
        for cluster in self.targets:
            self.wait_injected(self._api(ctx, cluster), cluster)

    def wait_injected(self, api: client.CustomObjectsApi, cluster: str) -> dict:
        """Poll until Selected and AllInjected are True; ChaosMeshError with the records' words at the
        deadline."""
        deadline = time.monotonic() + self.deadline_s
        while True:
            obj = self._read(api) or {}
            if _condition(obj, "Selected") and _condition(obj, "AllInjected"):
                return obj
            if time.monotonic() > deadline:
                raise ChaosMeshError(
                    f"{cluster}: {self.chaos_kind} {self.namespace}/{self.name} not injected after "
                    f"{self.deadline_s:g} s: {_last_words(obj)}"
                )
            time.sleep(POLL_S)

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = self._api(ctx, cluster)
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, self.name)
            except client.ApiException as error:
                if error.status != 404:
                    raise
        for cluster in self.targets:
            self.wait_gone(self._api(ctx, cluster), cluster)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Chaos Mesh's own record: the object Selected its targets and AllInjected is True."""
        found = []
        for cluster in self.targets:
            obj = self._read(self._api(ctx, cluster)) or {}
            injected = _condition(obj, "Selected") and _condition(obj, "AllInjected")
            found.append(Evidence(injected, f"{cluster}: {self.chaos_kind} {_last_words(obj)}"))
        return all_of(found)

    def wait_gone(self, api: client.CustomObjectsApi, cluster: str) -> None:
        deadline = time.monotonic() + self.deadline_s
        while (obj := self._read(api)) is not None:
            if time.monotonic() > deadline:
                raise ChaosMeshError(
                    f"{cluster}: {self.chaos_kind} {self.namespace}/{self.name} still there after "
                    f"{self.deadline_s:g} s (its finalizer waits for recovery): {_last_words(obj)}"
                )
            time.sleep(POLL_S)


@dataclass(frozen=True, kw_only=True)
class NetworkChaosFault(ChaosMeshFault, kind="chaos-mesh-network"):
    """partition, loss, delay, duplicate, corrupt or bandwidth between selected pods and their peers."""

    chaos_kind: ClassVar[str] = "NetworkChaos"
    plural: ClassVar[str] = "networkchaos"


@dataclass(frozen=True, kw_only=True)
class StressChaosFault(ChaosMeshFault, kind="chaos-mesh-stress"):
    """CPU and memory stress inside selected pods' containers."""

    chaos_kind: ClassVar[str] = "StressChaos"
    plural: ClassVar[str] = "stresschaos"


@dataclass(frozen=True, kw_only=True)
class PodChaosFault(ChaosMeshFault, kind="chaos-mesh-pod"):
    """pod-kill, pod-failure or container-kill of selected pods."""

    chaos_kind: ClassVar[str] = "PodChaos"
    plural: ClassVar[str] = "podchaos"
