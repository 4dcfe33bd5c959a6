"""A local-path provisioner: a folder on the chosen node for every PersistentVolumeClaim of its class.

Modelled on rancher's local-path-provisioner. Its StorageClass (the cluster default) binds on first
consumer, so the scheduler picks the node first and writes it into the claim's
`volume.kubernetes.io/selected-node` annotation; the provisioner then makes the folder
<root>/<node>/claims/<namespace>_<claim>_<uid> and a `local` PersistentVolume for it, pre-bound to the
claim (claimRef) with node affinity to that node, and the real PV controller binds the two. When a
claim is deleted and its volume, reclaimed with Delete, turns Released, it removes the folder and the
volume. PVCs and PVs come from list+watch (kwatch.Reflector); every change, and a resync, reconciles
all of them, so a missed step is retried. Everything goes through the API, as a real provisioner's.

    python -m harness.localfleet.provisioner --kubeconfig K --context C \
        --root D/clusters/<cluster>/nodes [--storage-class local-path]
"""

import argparse
import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, config
from urllib3.exceptions import HTTPError

from harness.errors import FleetDrillError
from harness.localfleet.kwatch import BACKOFF_S, Reflector

PROVISIONER = "fleetdrill.io/local-path"
STORAGE_CLASS = "local-path"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
HOSTNAME = "kubernetes.io/hostname"
ACCESS_MODES = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})
RESYNC_S = 5.0
log = logging.getLogger("provisioner")


def storage_class(name: str) -> dict:
    """The default StorageClass this provisioner serves."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def ensure_storage_class(api: client.ApiClient, name: str) -> None:
    """Create the StorageClass when missing; refuse one of the same name served by another provisioner."""
    classes = client.StorageV1Api(api)
    try:
        classes.create_storage_class(storage_class(name))
    except client.ApiException as error:
        if error.status != 409:
            raise
        found = classes.read_storage_class(name).provisioner
        if found != PROVISIONER:
            raise FleetDrillError(
                f"storage class {name!r} belongs to provisioner {found!r}, not {PROVISIONER!r}"
            ) from None


def install_class(kubeconfig: Path, context: str, name: str = STORAGE_CLASS) -> None:
    """Create the StorageClass in one cluster (so claims made before the provisioner lists still get it)."""
    with config.new_client_from_config(str(kubeconfig), context=context) as api:
        ensure_storage_class(api, name)


def argv(kubeconfig: Path, context: str, root: Path, name: str = STORAGE_CLASS) -> list[str]:
    """The provisioner's command line for one cluster whose node roots are under `root`."""
    return [
        sys.executable,
        "-m",
        "harness.localfleet.provisioner",
        f"--kubeconfig={kubeconfig}",
        f"--context={context}",
        f"--root={root}",
        f"--storage-class={name}",
    ]


def claim_folder(root: Path, node: str, claim: dict) -> Path:
    meta = claim["metadata"]
    return root / node / "claims" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def persistent_volume(claim: dict, node: str, folder: Path, reclaim: str) -> dict:
    """A `local` volume of the claim's size at folder, pre-bound to the claim, usable on `node` only."""
    meta, spec = claim["metadata"], claim["spec"]
    claim_ref = {"apiVersion": "v1", "kind": "PersistentVolumeClaim"}
    claim_ref |= {key: meta[key] for key in ("namespace", "name", "uid", "resourceVersion")}
    on_node = {"key": HOSTNAME, "operator": "In", "values": [node]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec["accessModes"],
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": spec["storageClassName"],
            "volumeMode": "Filesystem",
            "claimRef": claim_ref,
            "local": {"path": str(folder)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [on_node]}]}},
        },
    }


def unsupported(claim: dict) -> str:
    """Why this provisioner cannot serve the claim ('' when it can)."""
    spec = claim["spec"]
    if spec.get("selector"):
        return "a claim with a selector is not supported"
    if spec.get("volumeMode", "Filesystem") != "Filesystem":
        return "only volumeMode Filesystem is supported"
    if not set(spec.get("accessModes") or []) <= ACCESS_MODES:
        return f"only access modes {', '.join(sorted(ACCESS_MODES))} are supported"
    return ""


class Provisioner:
    """Reconciles the claims of one StorageClass with the volumes it provisioned."""

    def __init__(self, api: client.ApiClient, root: Path, class_name: str) -> None:
        self.core = client.CoreV1Api(api)
        self.classes = client.StorageV1Api(api)
        self.root = root.resolve()
        self.class_name = class_name
        self.changed = threading.Event()
        self.refused: set[str] = set()
        self.claims = Reflector(
            "persistentvolumeclaims",
            self.core.list_persistent_volume_claim_for_all_namespaces,
            self._wake,
            log.info,
        )
        self.volumes = Reflector("persistentvolumes", self.core.list_persistent_volume, self._wake, log.info)

    def _wake(self, _reflector: Reflector) -> None:
        self.changed.set()

    def run(self) -> None:
        """Reconcile after every change the watches report, and every RESYNC_S seconds."""
        self.claims.start()
        self.volumes.start()
        while True:
            self.changed.wait(RESYNC_S)
            self.changed.clear()
            if self.claims.synced and self.volumes.synced:
                self.reconcile()

    def reconcile(self) -> None:
        claims, volumes = dict(self.claims.store).values(), dict(self.volumes.store).values()
        made = {volume["metadata"]["name"] for volume in volumes}
        for claim in claims:
            node = self._waiting_on(claim)
            if node and f"pvc-{claim['metadata']['uid']}" not in made:
                self._attempt(f"provision {_name(claim)}", lambda c=claim, n=node: self.provision(c, n))
        for volume in volumes:
            if self._released(volume):
                self._attempt(f"delete {volume['metadata']['name']}", lambda v=volume: self.delete(v))

    def _waiting_on(self, claim: dict) -> str:
        """The node a claim of our class waits for a volume on ('' when it waits for none)."""
        meta, spec = claim["metadata"], claim["spec"]
        if spec.get("storageClassName") != self.class_name or spec.get("volumeName"):
            return ""
        if meta.get("deletionTimestamp"):
            return ""
        return (meta.get("annotations") or {}).get(SELECTED_NODE, "")

    def _released(self, volume: dict) -> bool:
        meta, spec = volume["metadata"], volume["spec"]
        return (
            (meta.get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
            and spec.get("persistentVolumeReclaimPolicy") == "Delete"
            and (volume.get("status") or {}).get("phase") == "Released"
            and not meta.get("deletionTimestamp")
        )

    def _attempt(self, what: str, step: Callable[[], None]) -> None:
        """One step; a failure is logged and retried at the next reconcile."""
        try:
            step()
        except (client.ApiException, HTTPError, OSError) as error:
            reason = (
                f"{error.status} {error.reason}: {str(error.body)[:200]}"
                if isinstance(error, client.ApiException)
                else error
            )
            log.warning("%s failed (%s); retrying", what, reason)

    def provision(self, claim: dict, node: str) -> None:
        """Make the claim's folder on its node and a volume for it."""
        problem = unsupported(claim)
        if problem:
            if claim["metadata"]["uid"] not in self.refused:
                log.warning("cannot provision %s: %s", _name(claim), problem)
                self._event(claim, "Warning", "ProvisioningFailed", problem)
                self.refused.add(claim["metadata"]["uid"])
            return
        folder = claim_folder(self.root, node, claim)
        folder.mkdir(parents=True, exist_ok=True)
        reclaim = self.classes.read_storage_class(self.class_name).reclaim_policy or "Delete"
        volume = persistent_volume(claim, node, folder, reclaim)
        try:
            self.core.create_persistent_volume(volume)
        except client.ApiException as error:
            if error.status != 409:
                raise
            return
        name = volume["metadata"]["name"]
        log.info("provisioned %s for %s on %s at %s", name, _name(claim), node, folder)
        self._event(claim, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {name}")

    def delete(self, volume: dict) -> None:
        """Remove a released volume's folder, then the volume."""
        name, spec = volume["metadata"]["name"], volume["spec"]
        folder = Path((spec.get("local") or spec.get("hostPath") or {}).get("path", ""))
        if folder.parent.name != "claims" or not folder.is_relative_to(self.root):
            log.warning(
                "not deleting %s: its path %s is not a claim folder under %s", name, folder, self.root
            )
            return
        if folder.exists():
            shutil.rmtree(folder)
        try:
            self.core.delete_persistent_volume(name)
        except client.ApiException as error:
            if error.status != 404:
                raise
        log.info("deleted %s and its folder %s", name, folder)

    def _event(self, claim: dict, kind: str, reason: str, message: str) -> None:
        """An Event on the claim, as `kubectl describe pvc` shows it; best effort."""
        meta, now = claim["metadata"], datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {"apiVersion": "v1", "kind": "PersistentVolumeClaim"}
        involved |= {key: meta[key] for key in ("namespace", "name", "uid", "resourceVersion")}
        event = {
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": involved,
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": PROVISIONER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._attempt(
            f"event {reason} on {_name(claim)}",
            lambda: self.core.create_namespaced_event(meta["namespace"], event),
        )


def _name(claim: dict) -> str:
    return f"{claim['metadata']['namespace']}/{claim['metadata']['name']}"


def main(args_list: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.localfleet.provisioner", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--context", required=True)
    parser.add_argument("--root", required=True, help="the folder holding one root folder per node")
    parser.add_argument("--storage-class", default=STORAGE_CLASS)
    args = parser.parse_args(args_list)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger().handlers[0].addFilter(lambda r: not r.name.startswith("urllib3"))  # its retries
    api = config.new_client_from_config(args.kubeconfig, context=args.context)
    delay = BACKOFF_S[0]
    while True:  # the API server may still be starting (a cluster coming back)
        try:
            ensure_storage_class(api, args.storage_class)
            break
        except (client.ApiException, HTTPError) as error:
            log.warning("cannot create storage class %s (%s); retrying", args.storage_class, error)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])
    log.info("serving storage class %s as %s under %s", args.storage_class, PROVISIONER, args.root)
    Provisioner(api, Path(args.root), args.storage_class).run()


if __name__ == "__main__":
    main()
