"""The fleet's backup store: a real MinIO server in the backup region's own network namespace.

It sits on the backup segment, so a partition can cut a cluster off from its backups. Its root
credentials are generated per fleet and only ever written to files readable by root (MinIO reads them
through MINIO_ROOT_USER_FILE / MINIO_ROOT_PASSWORD_FILE, so they are in no argv, environment record
or log). The bucket is made through the S3 API, signed with AWS Signature Version 4.
"""

import datetime as dt
import hashlib
import hmac
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import netns, network, pki, processes
from harness.localfleet.state import FleetState, start_process

KEY = "backup/objectstore"
FOLDER = "backup-store"
PORT = 9000
BUCKET = "velero"
REGION = "us-east-1"  # MinIO's default region; Velero's AWS plugin signs for the region it is given
STORE_HOST = 2
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class ObjectStoreError(FleetDrillError):
    """The backup store did not start or refused a request."""


@dataclass(frozen=True)
class Store:
    """Where the fleet's backups live, and the credentials file Velero reads (AWS credentials format)."""

    url: str
    bucket: str
    region: str
    credentials_file: Path

    def as_fleet_section(self) -> dict[str, str]:
        """What the fleet file records (never the credentials themselves)."""
        return {"url": self.url, "bucket": self.bucket, "region": self.region}


def store_ns(state: FleetState) -> str:
    return f"{network.prefix(state.plan)}backup"


def url(state: FleetState) -> str:
    return f"http://{state.plan.backup_segment.host(STORE_HOST)}:{PORT}"


def _credentials(folder: Path) -> tuple[str, str]:
    """New root credentials for this fleet, written to files only root can read."""
    user, password = f"fleet-{secrets.token_hex(6)}", secrets.token_urlsafe(30)
    pki.write_private(folder / "root-user", user.encode())
    pki.write_private(folder / "root-password", password.encode())
    pki.write_private(
        folder / "velero-credentials",
        f"[default]\naws_access_key_id={user}\naws_secret_access_key={password}\n".encode(),
    )
    return user, password


def start(state: FleetState, minio: Path, deadline_s: float) -> Store:
    """Start MinIO on the backup segment with its data under the fleet folder, and make the bucket."""
    folder = state.folder / FOLDER
    (folder / "data").mkdir(parents=True, exist_ok=True)
    user, password = _credentials(folder)
    segment, namespace = state.plan.backup_segment, store_ns(state)
    network.add_segment(state.plan, segment)
    netns.create(namespace)
    address = str(network.attach(state.plan, segment, namespace, STORE_HOST))
    env = {
        "MINIO_ROOT_USER_FILE": str(folder / "root-user"),
        "MINIO_ROOT_PASSWORD_FILE": str(folder / "root-password"),
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "GOGC": "50",
    }
    argv = [str(minio), "server", "--quiet", "--address", f"{address}:{PORT}"]
    argv += ["--certs-dir", str(folder / "certs"), str(folder / "data")]
    log = str(state.folder / "logs" / "backup" / "objectstore.log")
    start_process(state, processes.ProcessSpec(KEY, namespace, argv, env, log, address))
    store = Store(url(state), BUCKET, REGION, folder / "velero-credentials")
    deadline = time.monotonic() + deadline_s
    _wait_live(store.url, deadline, deadline_s, log)
    _make_bucket(store, user, password, deadline)
    return store


def _wait_live(base: str, deadline: float, deadline_s: float, log: str) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{base}/minio/health/live", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ObjectStoreError(f"backup store {base}: not live after {deadline_s:g} s; see {log}")
        time.sleep(0.1)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(
    method: str, base: str, path: str, user: str, password: str, region: str, now: dt.datetime
) -> dict[str, str]:
    """Headers of an S3 request with an empty body, signed with AWS Signature Version 4."""
    host = base.split("://", 1)[1]
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    names = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", names, EMPTY_SHA256]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{password}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    credential = f"Credential={user}/{scope}, SignedHeaders={names}, Signature={signature}"
    return {**headers, "Authorization": f"AWS4-HMAC-SHA256 {credential}"}


def _make_bucket(store: Store, user: str, password: str, deadline: float) -> None:
    """Make the bucket; MinIO is live before it is ready and answers 503 until it is, so retry that."""
    path = f"/{store.bucket}"
    while True:
        now = dt.datetime.now(dt.UTC)
        headers = signed_headers("PUT", store.url, path, user, password, store.region, now)
        request = urllib.request.Request(f"{store.url}{path}", method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise ObjectStoreError(
                    f"the backup store refused to make bucket {store.bucket}: HTTP {error.code}"
                ) from None
        time.sleep(0.2)
