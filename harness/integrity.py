"""Restore and failover integrity: an inventory of the protected app, diffed after the disaster.

The inventory holds every object of the app's namespace with a hash of what it says (status and
metadata the cluster writes - uid, resourceVersion, managedFields, timestamps, cluster-allocated IPs,
Velero's restore labels - are left out), and the app's data as its sentinel store reads it back (per
stream): record counts, a checksum, and a hash per record.
Objects a controller owns (ownerReferences: pods, ReplicaSets, EndpointSlices...) and the namespace's
generated objects are left out: their owners recreate them under new names. The diff names every
missing, extra or changed object (with the paths that changed, never the values) and every missing,
extra or changed record.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from harness.errors import FleetDrillError

TIMEOUT_S = 10
# Records of what happened, or what a controller derives from other objects, not what the app is
SKIPPED_KINDS = {"Event", "Lease", "Endpoints"}
GENERATED = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
METADATA_KEPT = ("labels", "annotations")
NOISY_PREFIXES = (  # labels and annotations the cluster, kubectl or Velero write
    "velero.io/",
    "deployment.kubernetes.io/",
    "kubectl.kubernetes.io/last-applied",
    "pv.kubernetes.io/",
    "volume.kubernetes.io/",
    "volume.beta.kubernetes.io/",
)
ALLOCATED = {  # fields each cluster fills in on its own
    "Service": ("clusterIP", "clusterIPs", "healthCheckNodePort"),
    "PersistentVolumeClaim": ("volumeName",),
}


class IntegrityError(FleetDrillError):
    """The inventory could not be read (an API or the app did not answer as expected)."""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fingerprint(obj: dict[str, Any]) -> dict[str, Any]:
    """What an object says, without status and metadata noise: the part its spec hash covers."""
    kept = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    meta = obj.get("metadata") or {}
    for part in METADATA_KEPT:
        values = {k: v for k, v in (meta.get(part) or {}).items() if not k.startswith(NOISY_PREFIXES)}
        if values:
            kept[part] = values
    spec = kept.get("spec")
    if isinstance(spec, dict) and obj.get("kind") in ALLOCATED:
        kept["spec"] = {k: v for k, v in spec.items() if k not in ALLOCATED[obj["kind"]]}
    return kept


@dataclass(frozen=True)
class ObjectRecord:
    """One object of the namespace: its key (kind.group/name), spec hash, and what the hash covers."""

    key: str
    digest: str
    content: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class StreamRecord:
    """One data stream: record count, checksum over the records in seq order, and a hash per seq."""

    stream: str
    count: int
    checksum: str
    records: dict[int, str] = field(repr=False)


@dataclass(frozen=True)
class Inventory:
    """The app's objects and data at one moment."""

    namespace: str
    objects: dict[str, ObjectRecord]
    streams: dict[str, StreamRecord]

    def to_dict(self) -> dict[str, Any]:
        """A summary for reports: hashes and counts (no object content: it may hold secrets)."""
        return {
            "namespace": self.namespace,
            "objects": {key: record.digest for key, record in sorted(self.objects.items())},
            "streams": {s.stream: {"count": s.count, "checksum": s.checksum} for s in self.streams.values()},
        }


def _get(api: client.ApiClient, path: str, **query: Any) -> dict[str, Any]:
    """GET an API path as JSON, with the client's credentials."""
    try:
        response = api.call_api(
            path,
            "GET",
            query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=TIMEOUT_S,
        )
    except client.ApiException as error:
        raise IntegrityError(f"GET {path}: HTTP {error.status} {error.reason}") from None
    return json.loads(response.data)


def _resource_lists(api: client.ApiClient) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group/version, APIResourceList) of the core API and the preferred version of every group."""
    yield "v1", _get(api, "/api/v1")
    for group in _get(api, "/apis").get("groups", []):
        version = group["preferredVersion"]["groupVersion"]
        yield version, _get(api, f"/apis/{version}")


def listed_resources(api: client.ApiClient) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group/version, APIResource) of every namespaced resource object_inventory lists: those the API
    discovery of the core API and every group's preferred version offers to list (Events, Leases and
    Endpoints left out); IntegrityError when discovery does not answer."""
    for version, listing in _resource_lists(api):
        for resource in listing.get("resources", []):
            if (
                "/" not in resource["name"]
                and resource.get("namespaced")
                and "list" in resource.get("verbs", [])
                and resource["kind"] not in SKIPPED_KINDS
            ):
                yield version, resource


def _generated(kind: str, item: dict[str, Any]) -> bool:
    """Objects the cluster makes in every namespace by itself."""
    token = item.get("type") == "kubernetes.io/service-account-token"
    return token or (kind, item["metadata"]["name"]) in GENERATED


def object_inventory(api: client.ApiClient, namespace: str) -> dict[str, ObjectRecord]:
    """Every object of `namespace` that is the app's own (not owned by another, not generated)."""
    records: dict[str, ObjectRecord] = {}
    for version, resource in listed_resources(api):
        group = version.rpartition("/")[0]
        prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
        items = _get(api, f"{prefix}/namespaces/{namespace}/{resource['name']}").get("items", [])
        for item in items:
            kind, name = resource["kind"], item["metadata"]["name"]
            if item["metadata"].get("ownerReferences") or _generated(kind, item):
                continue
            item["kind"] = kind
            key = f"{kind}{'.' + group if group else ''}/{name}"
            content = fingerprint(item)
            records[key] = ObjectRecord(key, _digest(content), content)
    return records


def backup_inventory(archive: Path, namespace: str) -> dict[str, ObjectRecord]:
    """The app's own objects of `namespace` in a Velero backup's tarball (`velero backup download`), keyed
    and hashed as object_inventory does the live ones: what a restore of it would bring back."""
    records: dict[str, ObjectRecord] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")  # resources/<plural>[.<group>]/namespaces/<namespace>/<name>.json
            if len(parts) != 5 or parts[0] != "resources" or parts[2:4] != ["namespaces", namespace]:
                continue
            readable = tar.extractfile(member)
            if readable is None:
                continue
            item = json.load(readable)
            kind, group = item.get("kind", ""), parts[1].partition(".")[2]
            if kind in SKIPPED_KINDS or item["metadata"].get("ownerReferences") or _generated(kind, item):
                continue
            key = f"{kind}{'.' + group if group else ''}/{item['metadata']['name']}"
            content = fingerprint(item)
            records[key] = ObjectRecord(key, _digest(content), content)
    return records


def stream_record(name: str, records: Mapping[int, Any]) -> StreamRecord:
    """One stream's records (as the app's sentinel store reads them back, by seq) as an inventory entry."""
    digests = {seq: _digest(record) for seq, record in records.items()}
    return StreamRecord(name, len(digests), _digest([digests[seq] for seq in sorted(digests)]), digests)


def take_inventory(
    api: client.ApiClient, namespace: str, streams: Mapping[str, Mapping[int, Any]] | None = None
) -> Inventory:
    """The inventory of the app: its namespace's objects and, when given, its data: the records of each
    stream by seq (read with the app's sentinel store, sentinels.py)."""
    data = {name: stream_record(name, records) for name, records in (streams or {}).items()}
    return Inventory(namespace, object_inventory(api, namespace), data)


def _paths(before: Any, after: Any, path: str = "") -> Iterator[str]:
    """The paths at which two fingerprints differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            yield from _paths(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
    elif before != after:
        yield path or "(whole object)"


def _runs(seqs: list[int]) -> str:
    """Seqs as compact runs: 3, 5-9, 12."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)


def diff(before: Inventory, after: Inventory) -> list[str]:
    """Every difference from `before` to `after`, one precise line each (values are never shown)."""
    lines = [f"missing object {key}" for key in sorted(set(before.objects) - set(after.objects))]
    lines += [f"extra object {key}" for key in sorted(set(after.objects) - set(before.objects))]
    for key in sorted(set(before.objects) & set(after.objects)):
        old, new = before.objects[key], after.objects[key]
        if old.digest != new.digest:
            lines.append(f"changed object {key}: {', '.join(_paths(old.content, new.content))}")
    for name in sorted(set(before.streams) | set(after.streams)):
        old_records = before.streams[name].records if name in before.streams else {}
        new_records = after.streams[name].records if name in after.streams else {}
        missing = sorted(set(old_records) - set(new_records))
        extra = sorted(set(new_records) - set(old_records))
        changed = sorted(s for s in set(old_records) & set(new_records) if old_records[s] != new_records[s])
        for what, seqs in (("missing", missing), ("extra", extra), ("changed", changed)):
            if seqs:
                lines.append(f"stream {name}: {len(seqs)} {what} record(s): seq {_runs(seqs)}")
    return lines
