"""Real PostgreSQL servers for the tests, from Debian's package: a primary made with initdb and streaming
replicas made with `pg_basebackup -R`, each on an ephemeral port of 127.0.0.1 with its unix socket in the
servers' own folder. The server refuses to run as root, so as root it runs as Debian's `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.conftest import OWNER, own

START_TIMEOUT_S = 30
USER, PASSWORD, DATABASE = "fleetdrill", "s3cret-only-in-the-environment", "shop"


def bin_dir() -> Path:
    """The newest PostgreSQL's programs (Debian keeps them out of PATH, under /usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), reverse=True
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run .ci/bootstrap (it installs Debian's postgresql)")
    return found[0].parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Server:
    """One server: its data folder and port; the socket folder is shared by the servers of a Servers."""

    data: Path
    port: int
    sockets: Path

    def conninfo(self, **extra: str) -> str:
        """How a client reaches it over TCP as the app's user (no password: it comes from elsewhere)."""
        params = {"host": "127.0.0.1", "port": str(self.port), "dbname": DATABASE, "user": USER, **extra}
        return " ".join(f"{key}={value}" for key, value in params.items())

    def written(self) -> str:
        """The primary's WAL position now (an LSN such as 0/3000148)."""
        with self.admin() as conn:
            return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])

    def replayed(self, lsn: str) -> bool:
        """Whether this replica has replayed the WAL up to `lsn`."""
        with self.admin() as conn:
            query = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)"
            return bool(conn.execute(query, [lsn]).fetchone()[0])

    def admin(self) -> psycopg.Connection:
        """A superuser connection over the unix socket (trusted), autocommit."""
        return psycopg.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname="postgres", autocommit=True
        )


class Servers:
    """Runs the PostgreSQL programs in one temporary folder and stops every server it started."""

    def __init__(self, folder: Path, cleanup: ExitStack) -> None:
        self.folder, self.bin, self._cleanup = folder, bin_dir(), cleanup
        self.started: list[Server] = []
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / program), *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")

    def configure(self, data: Path, port: int, *lines: str) -> Server:
        settings = [
            f"port = {port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.folder}'",
            "fsync = off",  # no test crashes a server: the data is gone with the folder anyway
            *lines,
        ]
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        return Server(data, port, self.folder)

    def start(self, server: Server, *options: str) -> Server:
        log = str(server.data.parent / f"{server.data.name}.log")
        args = ["-o", " ".join(options)] if options else []
        self.run(
            "pg_ctl", "-D", str(server.data), "-l", log, "-w", "-t", str(START_TIMEOUT_S), *args, "start"
        )
        self.started.append(server)
        self._cleanup.callback(self.stop, server)
        return server

    def stop(self, server: Server) -> None:
        """Stop the server (fast: its sessions are ended); nothing when it is not running."""
        if server in self.started:
            self.started.remove(server)
            self.run("pg_ctl", "-D", str(server.data), "-m", "fast", "-w", "-t", str(START_TIMEOUT_S), "stop")

    def primary(self) -> Server:
        """A started primary with the app's database and its password-authenticated user."""
        data = self.folder / "primary"
        self.run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        server = self.start(self.configure(data, free_port(), "wal_level = replica"))
        with server.admin() as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        return server

    def replica(self, primary: Server, name: str) -> Server:
        """A started streaming replica of `primary` (pg_basebackup -R writes its primary_conninfo)."""
        data = self.folder / name
        self.run(
            "pg_basebackup", "-h", str(self.folder), "-p", str(primary.port), "-U", "postgres",
            "-D", str(data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        return self.start(self.configure(data, free_port()))

    def promote(self, server: Server) -> None:
        self.run("pg_ctl", "-D", str(server.data), "-w", "-t", str(START_TIMEOUT_S), "promote")


PREFIX = "fleetdrill-pg-"


def remove_stale() -> None:
    """Stop the servers of folders whose test session was killed (their owner pid is gone), and remove
    the folders."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = folder / OWNER
        if not owner.exists() or Path(f"/proc/{owner.read_text().strip()}").exists():
            continue  # still starting, or its session is alive
        stale = Servers(folder, ExitStack())
        for pid_file in folder.glob("*/postmaster.pid"):
            stale.started.append(Server(pid_file.parent, 0, folder))
            stale.stop(stale.started[-1])
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def servers() -> Iterator[Servers]:
    """A folder for servers, readable by the user they run as; every started server stopped at the end
    (and by the next session when this one is killed)."""
    remove_stale()
    folder = own(Path(tempfile.mkdtemp(prefix=PREFIX)))
    with ExitStack() as cleanup:  # last in, first out: each server stopped, then the folder removed
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        yield Servers(folder, cleanup)
