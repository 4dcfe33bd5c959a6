"""A kubeconfig exec credential plugin for the tests, as short-lived as a cloud's: each run hands out a new
credential valid for --lifetime seconds, with its expirationTimestamp, and appends one line to --log (the
time, the credential's number, --name and the program that ran it; never the credential).

With --ca (a folder holding ca.crt and ca.key, as a local fleet's pki), a client certificate issued by that
CA to --user in each --group; without, a bearer token "token-N". --lifetime may be negative (an expired
credential)."""

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

from harness.localfleet import pki


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--lifetime", type=float, required=True)
    parser.add_argument("--ca", type=Path)
    parser.add_argument("--user", default="fleetdrill-exec")
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--name", default="-", help="whose credential it is, for the log")
    args = parser.parse_args()
    info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
    number = len(args.log.read_text().splitlines()) + 1 if args.log.exists() else 1
    lifetime = dt.timedelta(seconds=args.lifetime)
    expires = dt.datetime.now(dt.UTC) + lifetime
    status: dict[str, str] = {"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if args.ca is not None:
        ca = pki.KeyPair((args.ca / "ca.crt").read_bytes(), (args.ca / "ca.key").read_bytes())
        issued = pki.issue(ca, args.user, organizations=tuple(args.group), client=True, lifetime=lifetime)
        status |= {"clientCertificateData": issued.cert.decode(), "clientKeyData": issued.key.decode()}
    else:
        status["token"] = f"token-{number}"
    parent = Path(f"/proc/{os.getppid()}/comm").read_text().strip() or "-"  # who ran it: python, velero
    with args.log.open("a") as log:
        log.write(f"{time.time():.3f} {number} {args.name} {parent}\n")
    print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))


if __name__ == "__main__":
    main()
