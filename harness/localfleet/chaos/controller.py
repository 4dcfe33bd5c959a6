"""The chaos controller: watches NetworkChaos, StressChaos, PodChaos and pods through the API and drives
each chaos object's records towards its desired phase, as Chaos Mesh's controller-manager does.

Everything it must remember lives in the objects: records (what is injected where) in the status, the
finalizer `chaos-mesh/records` so a delete recovers first, the end of a fault from its creation time
and duration. A restarted controller lists the objects and carries on: it recovers what the records
say is injected once the duration is over, and applies nothing twice.
"""

import functools
import heapq
import queue
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client

from harness.localfleet import kwatch
from harness.localfleet.chaos import crds, records
from harness.localfleet.chaos.kinds import KINDS, Cluster
from harness.localfleet.chaos.selection import SelectionError

FINALIZER = "chaos-mesh/records"
RETRY_S = 5.0
MAX_FAILURES = 3
IDLE_WAIT_S = 60.0
Key = tuple[str, str]  # (kind, namespace/name)


def _version(obj: dict) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return 0


def _failures(record: dict) -> tuple[int, datetime | None]:
    """Failed applies since the last success, and when the last one happened."""
    count, last = 0, None
    for event in reversed(record.get("events") or []):
        if event["operation"] != "Apply" or event["type"] != "Failed":
            break
        count, last = count + 1, last or records.parse_time(event["timestamp"])
    return count, last


class Controller:
    """One per cluster; reconciles one object at a time from a queue fed by watches and timers."""

    def __init__(self, api: client.ApiClient, say: Callable[[str], None]) -> None:
        self.say = say
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.queue: queue.Queue[Key] = queue.Queue()
        self.timers: list[tuple[float, Key]] = []
        self.seen: dict[Key, str] = {}
        self.latest: dict[Key, dict] = {}
        self.released = False
        self.reflectors = {
            kind: kwatch.Reflector(
                kind,
                functools.partial(
                    self.custom.list_cluster_custom_object, crds.GROUP, crds.VERSION, crds.plural(kind)
                ),
                functools.partial(self._changed, kind),
                say,
            )
            for kind in KINDS
        }
        self.pods = kwatch.Reflector("pods", self.core.list_pod_for_all_namespaces, self._pods_changed, say)
        self.cluster = Cluster(
            lambda: list(self.pods.store.values()), self._node_labels, self.core, random.Random()
        )

    def _node_labels(self) -> dict[str, dict[str, str]]:
        return {n.metadata.name: n.metadata.labels or {} for n in self.core.list_node().items}

    def _changed(self, kind: str, reflector: kwatch.Reflector) -> None:
        """Queue every object whose resourceVersion moved (watch thread)."""
        for key, obj in list(reflector.store.items()):
            version = obj["metadata"].get("resourceVersion", "")
            if self.seen.get((kind, key)) != version:
                self.seen[(kind, key)] = version
                self.queue.put((kind, key))

    def _pods_changed(self, reflector: kwatch.Reflector) -> None:
        """Pods moved: pod-failure faults in force must hold. Objects are not reconciled while the pods
        are not in sync (after a lost watch too); every sync releases them all."""
        for key, obj in list(self.reflectors["PodChaos"].store.items()):
            if (obj.get("spec") or {}).get("action") == "pod-failure":
                self.queue.put(("PodChaos", key))
        released, self.released = self.released, reflector.synced
        if reflector.synced and not released:
            for kind, chaos in self.reflectors.items():
                for key in list(chaos.store):
                    self.queue.put((kind, key))

    def run_forever(self) -> None:
        for reflector in (self.pods, *self.reflectors.values()):
            reflector.start()
        while True:
            now = time.time()
            while self.timers and self.timers[0][0] <= now:
                self.queue.put(heapq.heappop(self.timers)[1])
            wait = min(self.timers[0][0] - now, IDLE_WAIT_S) if self.timers else IDLE_WAIT_S
            try:
                key = self.queue.get(timeout=max(wait, 0.001))
            except queue.Empty:
                continue
            if self.pods.synced:
                self.reconcile(*key)

    def _later(self, moment: datetime, key: Key) -> None:
        heapq.heappush(self.timers, (moment.timestamp(), key))

    def _current(self, kind: str, key: str) -> dict | None:
        """The newest of what the watch saw and what our own last write returned."""
        watched, written = self.reflectors[kind].store.get(key), self.latest.get((kind, key))
        if watched is None:
            self.latest.pop((kind, key), None)
            return None
        return written if written and _version(written) > _version(watched) else watched

    def reconcile(self, kind: str, key: str) -> None:
        obj = self._current(kind, key)
        if obj is None:
            return
        try:
            self._reconcile(kind, key, obj)
        except client.ApiException as error:
            if error.status == 409:  # our view was stale: the watch brings the newer object
                self.queue.put((kind, key))
            elif error.status != 404:
                self._retry(kind, key, f"API error {error.status} {error.reason}")
        except Exception as error:  # a bad object must not stop the controller: say so, try again later
            self._retry(kind, key, f"{type(error).__name__}: {error}")

    def _retry(self, kind: str, key: str, why: str) -> None:
        self.say(f"{kind} {key}: {why}; retrying in {RETRY_S:g} s")
        self._later(datetime.fromtimestamp(time.time() + RETRY_S, UTC), (kind, key))

    def _reconcile(self, kind: str, key: str, obj: dict) -> None:
        meta, now = obj["metadata"], datetime.now(UTC)
        deleting = bool(meta.get("deletionTimestamp"))
        desired = records.desired_phase(obj, now)
        status = obj.get("status") or {}
        found = (status.get("experiment") or {}).get("containerRecords")
        held = [dict(r) for r in found] if found is not None else None
        reason = next(
            (c.get("reason", "") for c in status.get("conditions") or [] if c["type"] == "Selected"), ""
        )
        if held is None and desired == records.RUN:
            try:
                held = [records.new_record(i) for i in KINDS[kind].record_ids(obj, self.cluster)]
                reason = ""
            except (SelectionError, ValueError) as error:
                reason = str(error)
        for record in held or []:
            self._drive(kind, key, obj, record, desired, now)
        if not deleting and FINALIZER not in (meta.get("finalizers") or []):
            obj = self._finalize(kind, key, obj, held or [], now)
            if obj is None:
                return
        end = records.ends_at(obj)
        if desired == records.RUN and end is not None:
            self._later(end, (kind, key))
        new_status = records.status(held, desired, records.paused(obj), reason)
        if new_status != {k: status.get(k) for k in new_status}:
            obj = self._patch(kind, key, {"status": new_status}, subresource=True)
        if deleting and all(r["phase"] == records.NOT_INJECTED for r in held or []):
            finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            self._patch(kind, key, {"metadata": {"finalizers": finalizers}})
            self.say(f"{kind} {key}: recovered; finalizer removed")

    def _finalize(self, kind: str, key: str, obj: dict, held: list[dict], now: datetime) -> dict | None:
        """Add the finalizer, after the first injection so it costs the fault no round trip. An object
        deleted in between is gone (404) or refuses new finalizers (422): recover at once, return None."""
        finalizers = [*(obj["metadata"].get("finalizers") or []), FINALIZER]
        try:
            return self._patch(kind, key, {"metadata": {"finalizers": finalizers}})
        except client.ApiException as error:
            if error.status not in (404, 422):
                raise
        for record in held:
            self._drive(kind, key, obj, record, records.STOP, now)
        self.say(f"{kind} {key}: deleted before its finalizer was set; recovered")
        return None

    def _drive(self, kind: str, key: str, obj: dict, record: dict, desired: str, now: datetime) -> None:
        """Apply or recover one record towards the desired phase, noting the outcome as an event."""
        impl = KINDS[kind]
        want = records.INJECTED if desired == records.RUN else records.NOT_INJECTED
        if record["phase"] == want:
            message = impl.hold(obj, record["id"], self.cluster) if want == records.INJECTED else ""
            if message:
                records.note(record, "Apply", True, message, now)
            return
        operation = "Apply" if want == records.INJECTED else "Recover"
        failures, last = _failures(record) if operation == "Apply" else (0, None)
        if failures >= MAX_FAILURES:
            return
        if last is not None and (now - last).total_seconds() < RETRY_S:
            self._later(datetime.fromtimestamp(last.timestamp() + RETRY_S, UTC), (kind, key))
            return
        started = time.monotonic()
        try:
            step = impl.apply if operation == "Apply" else impl.recover
            message, ok = step(obj, record["id"], self.cluster), True
        except Exception as error:  # any failure of one target is its record's event, as in Chaos Mesh
            message, ok = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}", False
            if operation == "Recover" or failures + 1 < MAX_FAILURES:
                self._later(datetime.fromtimestamp(now.timestamp() + RETRY_S, UTC), (kind, key))
        message += f" ({(time.monotonic() - started) * 1000:.0f} ms)"
        records.note(record, operation, ok, message, now)
        self.say(f"{kind} {key}: {operation} {record['id']} {'succeeded' if ok else 'failed'}: {message}")

    def _patch(self, kind: str, key: str, body: dict, subresource: bool = False) -> dict:
        namespace, name = key.split("/", 1)
        patch = (
            self.custom.patch_namespaced_custom_object_status
            if subresource
            else (self.custom.patch_namespaced_custom_object)
        )
        updated = patch(
            crds.GROUP,
            crds.VERSION,
            namespace,
            crds.plural(kind),
            name,
            body,
            _content_type="application/merge-patch+json",
        )
        self.latest[(kind, key)] = updated
        return updated
