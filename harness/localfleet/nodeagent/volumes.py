"""Pod volumes laid out under the node's root, as the kubelet lays them out, read through the API.

The node's root plays the kubelet's root directory (/var/lib/kubelet): a pod's volumes live in
ROOT/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>, a claim's local volume appears there as
kubernetes.io~local-volume/<pv-name> (a link to the volume's folder, where the kubelet bind-mounts
it), and a hostPath under /var/lib/kubelet names the same place under the node's root, so a
DaemonSet that reads the kubelet's pod folders (Velero's node agent) finds them as it would on a
real node.
"""

import base64
import shutil
from pathlib import Path

from kubernetes import client

from harness.localfleet import registry

TOKEN_SECONDS = 3607
KUBELET_ROOT = Path("/var/lib/kubelet")
PLUGIN_FOLDERS = {  # the kubelet's volume plugin names, as they appear in the pod's volumes folder
    "empty_dir": "kubernetes.io~empty-dir",
    "config_map": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downward_api": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}
LOCAL_VOLUME = "kubernetes.io~local-volume"


class VolumeError(Exception):
    """A volume could not be prepared (the pod waits, with the reason in its status)."""


def _write(folder: Path, files: dict[str, bytes], items: list | None, mode: int = 0o644) -> None:
    """Write key files into folder; `items` (key -> path) selects and renames keys as Kubernetes does."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = {item.key: item.path for item in items} if items else {key: key for key in files}
    for key, path in chosen.items():
        if key not in files:
            raise VolumeError(f"key {key!r} not found")
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[key])
        target.chmod(mode)


class Volumes:
    """Builds the folder of each volume of a pod under root/pods/<uid>/volumes/<name>."""

    def __init__(self, api: client.ApiClient, root: Path) -> None:
        self.core = client.CoreV1Api(api)
        self.root = root

    def pod_dir(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def prepare(self, pod: client.V1Pod) -> dict[str, Path]:
        """Folder per volume name; raises VolumeError when a source is missing."""
        folders = {}
        for volume in pod.spec.volumes or []:
            plugin = next((f for attr, f in PLUGIN_FOLDERS.items() if getattr(volume, attr) is not None), "")
            folder = self.pod_dir(pod.metadata.uid) / "volumes" / plugin / volume.name
            folders[volume.name] = self._prepare(pod, volume, folder)
        return folders

    def host_path(self, path: str) -> Path:
        """Where a hostPath points on this node: the kubelet's own folders are under the node's root."""
        if Path(path).is_relative_to(KUBELET_ROOT):
            return self.root / Path(path).relative_to(KUBELET_ROOT)
        return Path(path)

    def _prepare(self, pod: client.V1Pod, volume: client.V1Volume, folder: Path) -> Path:
        namespace = pod.metadata.namespace
        if volume.host_path:
            path = self.host_path(volume.host_path.path)
            if volume.host_path.type in ("DirectoryOrCreate", None, ""):
                path.mkdir(parents=True, exist_ok=True)
            return path
        if volume.persistent_volume_claim:
            return self._claim(pod, volume.persistent_volume_claim.claim_name)
        folder.mkdir(parents=True, exist_ok=True)
        if volume.empty_dir is not None:
            return folder
        if volume.config_map:
            self._config_map(
                namespace, volume.config_map.name, volume.config_map.items, folder, volume.config_map.optional
            )
        elif volume.secret:
            self._secret(
                namespace, volume.secret.secret_name, volume.secret.items, folder, volume.secret.optional
            )
        elif volume.downward_api:
            self._downward(pod, volume.downward_api.items, folder)
        elif volume.projected:
            for source in volume.projected.sources:
                self._projected(pod, source, folder)
        else:
            raise VolumeError(
                f"volume {volume.name}: this node supports emptyDir, configMap, secret, "
                "downwardAPI, projected, hostPath and persistentVolumeClaim"
            )
        return folder

    def _claim(self, pod: client.V1Pod, name: str) -> Path:
        """The folder of the local or hostPath volume bound to the claim (made when missing), linked into
        the pod's volumes folder under the volume's name as the kubelet mounts it there."""
        namespace = pod.metadata.namespace
        try:
            claim = self.core.read_namespaced_persistent_volume_claim(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                raise VolumeError(f"persistentvolumeclaim {name!r} not found") from error
            raise
        if claim.status.phase != "Bound" or not claim.spec.volume_name:
            raise VolumeError(f"persistentvolumeclaim {name!r} is not bound")
        volume = self.core.read_persistent_volume(claim.spec.volume_name)
        if volume.spec.claim_ref is None or volume.spec.claim_ref.uid != claim.metadata.uid:
            raise VolumeError(f"persistentvolume {volume.metadata.name} is not bound to claim {name!r}")
        source = volume.spec.local or volume.spec.host_path
        if source is None:
            raise VolumeError(
                f"persistentvolume {volume.metadata.name}: this node supports local and hostPath volumes"
            )
        path = Path(source.path)
        path.mkdir(parents=True, exist_ok=True)
        if volume.spec.local:
            link = self.pod_dir(pod.metadata.uid) / "volumes" / LOCAL_VOLUME / volume.metadata.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(path, target_is_directory=True)
        return path

    def _config_map(
        self, namespace: str, name: str, items: list | None, folder: Path, optional: bool | None
    ) -> None:
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except client.ApiException as error:
            if error.status == 404 and optional:
                return
            raise VolumeError(f"configmap {name!r} not found") from error
        files = {k: v.encode() for k, v in (found.data or {}).items()}
        files |= {k: base64.b64decode(v) for k, v in (found.binary_data or {}).items()}
        _write(folder, files, items)

    def _secret(
        self, namespace: str, name: str, items: list | None, folder: Path, optional: bool | None
    ) -> None:
        try:
            found = self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as error:
            if error.status == 404 and optional:
                return
            raise VolumeError(f"secret {name!r} not found") from error
        _write(folder, {k: base64.b64decode(v) for k, v in (found.data or {}).items()}, items, 0o600)

    def _downward(self, pod: client.V1Pod, items: list, folder: Path) -> None:
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "metadata.labels": "\n".join(
                f'{k}="{v}"' for k, v in sorted((pod.metadata.labels or {}).items())
            ),
            "metadata.annotations": "\n".join(
                f'{k}="{v}"' for k, v in sorted((pod.metadata.annotations or {}).items())
            ),
        }
        for item in items:
            if item.field_ref:
                _write(folder, {item.path: fields.get(item.field_ref.field_path, "").encode()}, None)

    def _projected(self, pod: client.V1Pod, source: client.V1VolumeProjection, folder: Path) -> None:
        if source.service_account_token:
            token = self.core.create_namespaced_service_account_token(
                pod.spec.service_account_name or "default",
                pod.metadata.namespace,
                {
                    "spec": {
                        "audiences": [source.service_account_token.audience]
                        if source.service_account_token.audience
                        else None,
                        "expirationSeconds": source.service_account_token.expiration_seconds or TOKEN_SECONDS,
                        "boundObjectRef": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "name": pod.metadata.name,
                            "uid": pod.metadata.uid,
                        },
                    }
                },
            )
            _write(folder, {source.service_account_token.path: token.status.token.encode()}, None, 0o600)
        elif source.config_map:
            self._config_map(
                pod.metadata.namespace,
                source.config_map.name,
                source.config_map.items,
                folder,
                source.config_map.optional,
            )
        elif source.secret:
            self._secret(
                pod.metadata.namespace,
                source.secret.name,
                source.secret.items,
                folder,
                source.secret.optional,
            )
        elif source.downward_api:
            self._downward(pod, source.downward_api.items, folder)

    def ensure_mountpoint(self, path: Path) -> None:
        """Create a mount path missing on this machine, recording each folder made (deepest last) in
        root/mountpoints, so that `fleet down` removes them when no pod can be using them any more."""
        for folder in reversed([p for p in (path, *path.parents) if not p.exists()]):
            folder.mkdir(exist_ok=True)
            registry.record_mountpoint(folder)

    def ensure_mount_file(self, path: Path) -> None:
        """Create a file mount target missing on this machine (and its folders), recorded as
        ensure_mountpoint records folders, for a file bound over it (a container's termination log)."""
        self.ensure_mountpoint(path.parent)
        if not path.exists():
            path.touch()
            registry.record_mountpoint(path)

    def remove(self, uid: str) -> None:
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)
