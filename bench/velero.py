"""Benchmark the real Velero in the local fleet: backup and restore of the sample app with its data.

Starts a two-cluster local fleet of its own (or uses --dir) and takes it down at the end. Writes
--records orders to the app in us-east, then times:
- a file-system backup of the app's namespace (its claim's data through Velero's node agent and kopia)
  from `velero backup create` to phase Completed;
- how long the backup takes to appear in eu-west (a DR cluster, ReadOnly location) by Velero's own
  backup sync, against its sync period; then again for a second backup with eu-west's Velero
  restarted (its sync runs as it starts);
- a restore into eu-west under another namespace, from `velero restore create` to phase Completed,
  and to the restored app serving every record.
Prints the figures and their ratio to the targets; asserts nothing.

    .venv/bin/python bench/velero.py [--records 10000] [--dir FLEET_DIR]
"""

import argparse
import http.client
import json
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

from kubernetes import client, config

from harness import velero
from harness.config import load_fleet
from harness.errors import FleetDrillError
from harness.localfleet import supervisor, velero_install
from harness.sentinels import SentinelStore, Where, store_for
from harness.velero import BackupSpec, Velero

TARGET_S = 10.0
SOURCE, TARGET, APP = "us-east", "eu-west", "orders"
DEADLINE_S = 300.0


def write_orders(base_url: str, stream: str, count: int) -> float:
    """Write `count` orders on one kept-alive connection; return the seconds it took."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base_url).netloc, timeout=10)
    try:
        for seq in range(1, count + 1):
            body = json.dumps({"seq": seq, "payload": f"order {seq}", "stream": stream})
            conn.request("POST", "/orders", body, {"Content-Type": "application/json"})
            with conn.getresponse() as reply:
                reply.read()
                if reply.status != 201:
                    raise SystemExit(f"order {seq}: HTTP {reply.status}")
    finally:
        conn.close()
    return time.monotonic() - start


def timed(step, *args) -> float:
    start = time.monotonic()
    step(*args)
    return time.monotonic() - start


def restored_url(core: client.CoreV1Api, namespace: str) -> str | None:
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.status.pod_ip:
            return f"http://{pod.status.pod_ip}:8080"
    return None


def serving(core: client.CoreV1Api, namespace: str, store: SentinelStore, stream: str) -> int | None:
    """How many orders of the stream the restored app serves, or None while it does not answer."""
    url = restored_url(core, namespace)
    if url is None:
        return None
    try:
        return len(store.present(Where("restored", url), 0, stream))
    except FleetDrillError:  # not answering yet: the next poll tells
        return None


def poll(condition, deadline_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            raise SystemExit(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def run(folder: Path, records: int) -> None:
    fleet = load_fleet(folder / "fleet.yaml")
    store = store_for(fleet.apps[0], "apps[0].sentinels")
    source, target = Velero.for_cluster(fleet, SOURCE), Velero.for_cluster(fleet, TARGET)
    tag = uuid.uuid4().hex[:6]
    stream = f"bench-{tag}"
    wrote = write_orders(fleet.apps[0].endpoints[SOURCE], stream, records)
    print(f"wrote {records} orders in {wrote:.1f} s")

    name = f"bench-{tag}"
    spec = BackupSpec(include_namespaces=(APP,), default_volumes_to_fs_backup=True)
    backup_s = timed(lambda: (source.create_backup(name, spec), source.wait_for_backup(name, DEADLINE_S)))
    seen_s = timed(target.wait_for_backup_visible, name, DEADLINE_S)

    second = f"{name}-again"
    source.create_backup(second, spec)
    source.wait_for_backup(second, DEADLINE_S)
    api = config.new_client_from_config(str(folder / "kubeconfig"), context=TARGET)
    core = client.CoreV1Api(api)
    try:
        restarted_s = timed(
            lambda: (velero.restart_server(api), target.wait_for_backup_visible(second, DEADLINE_S))
        )
        restore, namespace = f"{name}-restore", f"{APP}-bench-{tag}"
        start = time.monotonic()
        target.create_restore(restore, backup=name, namespace_mappings={APP: namespace})
        target.wait_for_restore(restore, DEADLINE_S)
        restore_s = time.monotonic() - start
        poll(lambda: serving(core, namespace, store, stream) is not None, DEADLINE_S, "the restored app")
        serving_s = time.monotonic() - start
        served = serving(core, namespace, store, stream)
        core.delete_namespace(namespace)
    finally:
        api.close()

    period = velero_install.SYNC_PERIOD_S
    print(
        f"backup of {records} records (file-system backup, kopia): {backup_s:.2f} s "
        f"({backup_s / TARGET_S:.2f}x target)"
    )
    print(f"restore to Completed: {restore_s:.2f} s ({restore_s / TARGET_S:.2f}x target)")
    print(
        f"restore to the restored app serving: {serving_s:.2f} s ({serving_s / TARGET_S:.2f}x target); "
        f"it serves {served} of the {records} records backed up"
    )
    print(
        f"backup visible in {TARGET} by Velero's sync: {seen_s:.1f} s after Completed "
        f"(sync period {period} s; the sync controller wakes every {velero_install.SYNC_TICK_S} s)"
    )
    print(f"backup visible in {TARGET} with its Velero restarted: {restarted_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, help="a running fleet with Velero (default: start one of two)")
    args = parser.parse_args()
    bench(args)


def bench(args: argparse.Namespace) -> None:
    if args.dir:
        run(args.dir, args.records)
        return
    with tempfile.TemporaryDirectory(prefix="fd-bench-velero-") as folder:
        try:
            supervisor.up(Path(folder), clusters=2, backups=True)
            run(Path(folder), args.records)
        finally:
            supervisor.down(Path(folder))


if __name__ == "__main__":
    main()
