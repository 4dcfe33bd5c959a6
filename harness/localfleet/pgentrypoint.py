"""The official `postgres` image's entrypoint, as the node agent runs it for that image (written from the
image's documentation and docker-entrypoint.sh's documented behaviour, not copied).

Started as root in the container's namespaces with the image's command (default `postgres`; a first
argument starting with `-` is a server option, so `postgres` goes before it). For the server it makes
PGDATA (default /var/lib/postgresql/data) owned by the postgres user, mode 0700, drops to that user (the
image's gosu), and on an empty PGDATA runs initdb (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_INITDB_ARGS,
POSTGRES_INITDB_WALDIR), lets every host in with POSTGRES_HOST_AUTH_METHOD (default scram-sha-256),
listens on all addresses, then on a server reachable only through its socket creates POSTGRES_DB and runs
/docker-entrypoint-initdb.d once, in name order: *.sh (run; a script that is not executable runs with
bash, where the image sources it), *.sql, *.sql.gz and *.sql.xz through psql. Finally it replaces itself
with the server, which is then the container's process. Each POSTGRES_* setting may come from a file
named by the same variable with _FILE appended. Our containers share the machine's filesystem, so the
socket folder /run/postgresql is a tmpfs of the container's own mount namespace (exec and probes enter
that namespace, so `psql` and `pg_isready` find the server there). Stopping is the server's own: the
image's STOPSIGNAL is SIGINT, the server's fast shutdown (the catalogue says so to the node's runtime);
SIGTERM would be its smart shutdown, which waits for every connected client.
"""

import ctypes
import gzip
import lzma
import os
import pwd
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PGDATA = "/var/lib/postgresql/data"
INITDB_D = Path("/docker-entrypoint-initdb.d")
SOCKET_DIR = Path("/run/postgresql")
PORT = "5432"
HELP_OPTIONS = ("-?", "--help", "--describe-config", "-V", "--version")
FILE_SETTINGS = ("POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_INITDB_ARGS")
NO_PASSWORD = """Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended."""
MS_NOSUID, MS_NODEV = 2, 4


class EntrypointError(Exception):
    """The container cannot start the server as configured (printed, exit 1, as the image's script)."""


@dataclass(frozen=True)
class Settings:
    """The image's settings, read once from the container's environment."""

    user: str
    password: str
    database: str
    pgdata: Path
    initdb_args: tuple[str, ...]
    waldir: str
    auth_method: str


def _setting(env: dict[str, str], name: str) -> str:
    """NAME, or the contents of the file NAME_FILE names; both set is an error, as in the image."""
    file = env.get(f"{name}_FILE", "")
    if file and env.get(name):
        raise EntrypointError(f"error: both {name} and {name}_FILE are set (but are exclusive)")
    if file:
        return Path(file).read_text().rstrip("\n")
    return env.get(name, "")


def settings(env: dict[str, str]) -> Settings:
    """The image's settings with its defaults (POSTGRES_DB defaults to the user's name)."""
    values = {name: _setting(env, name) for name in FILE_SETTINGS}
    user = values["POSTGRES_USER"] or "postgres"
    return Settings(
        user=user,
        password=values["POSTGRES_PASSWORD"],
        database=values["POSTGRES_DB"] or user,
        pgdata=Path(env.get("PGDATA") or DEFAULT_PGDATA),
        initdb_args=tuple(shlex.split(values["POSTGRES_INITDB_ARGS"])),
        waldir=env.get("POSTGRES_INITDB_WALDIR", ""),
        auth_method=env.get("POSTGRES_HOST_AUTH_METHOD") or "scram-sha-256",
    )


def command(args: list[str]) -> list[str]:
    """The command the entrypoint runs: `postgres` by default and before a leading option."""
    if not args or args[0].startswith("-"):
        return ["postgres", *args]
    return args


def sets_up_server(argv: list[str]) -> bool:
    """Whether the command starts the server (not another program, nor a request for help or version)."""
    return argv[0] == "postgres" and not any(a in HELP_OPTIONS or a == "-C" for a in argv[1:])


def check_password(config: Settings) -> None:
    """An uninitialised database needs a superuser password unless every host is trusted."""
    if not config.password and config.auth_method != "trust":
        raise EntrypointError(NO_PASSWORD)


def initdb_argv(config: Settings, pwfile: Path | None) -> list[str]:
    argv = ["initdb", f"--username={config.user}"]
    if pwfile is not None:
        argv.append(f"--pwfile={pwfile}")
    if config.waldir:
        argv.append(f"--waldir={config.waldir}")
    return [*argv, *config.initdb_args]


def hba_line(config: Settings) -> str:
    """The pg_hba.conf rule the image appends: every host, every database, the configured method."""
    return f"\nhost all all all {config.auth_method}\n"


def psql_argv(config: Settings, database: str) -> list[str]:
    return ["psql", "-v", "ON_ERROR_STOP=1", f"--username={config.user}", "--no-password", "--no-psqlrc",
            f"--dbname={database}"]  # fmt: skip


def script_kind(path: Path) -> str:
    """How an init script runs: "sh", "sql", "sql.gz", "sql.xz", or "" (ignored)."""
    return next((kind for kind in ("sh", "sql", "sql.gz", "sql.xz") if path.name.endswith(f".{kind}")), "")


def _run(argv: list[str], stdin: bytes | None = None) -> None:
    if subprocess.run(argv, input=stdin, check=False).returncode != 0:
        raise EntrypointError(f"{argv[0]} failed; see the output above")


def _private_socket_dir() -> None:
    """A tmpfs at /run/postgresql seen only in this container's mount namespace."""
    SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", str(SOCKET_DIR).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=3777") != 0:
        errno = ctypes.get_errno()
        raise EntrypointError(f"mount tmpfs on {SOCKET_DIR}: {os.strerror(errno)}")


def _become_postgres(config: Settings) -> None:
    """Own PGDATA as the postgres user and become that user (the image's root start, then gosu)."""
    user = pwd.getpwnam("postgres")
    config.pgdata.mkdir(parents=True, exist_ok=True)
    os.chown(config.pgdata, user.pw_uid, user.pw_gid)
    config.pgdata.chmod(0o700)
    _private_socket_dir()
    os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = user.pw_dir
    if not os.access(".", os.R_OK | os.X_OK):
        os.chdir("/")


def _initdb(config: Settings) -> None:
    check_password(config)
    with tempfile.TemporaryDirectory() as scratch:
        pwfile = Path(scratch) / "pwfile" if config.password else None
        if pwfile is not None:
            pwfile.write_text(config.password + "\n")
            pwfile.chmod(0o600)
        _run(initdb_argv(config, pwfile))
    with (config.pgdata / "pg_hba.conf").open("a") as hba:
        hba.write(hba_line(config))
    with (config.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nlisten_addresses = '*'\n")


def _init_scripts(config: Settings) -> None:
    """On a server reachable only through its socket: POSTGRES_DB, then the init scripts, once."""
    os.environ.setdefault("PGPASSWORD", config.password)
    pg_ctl = ["pg_ctl", "-D", str(config.pgdata), "-w"]
    _run([*pg_ctl, "-o", f"-c listen_addresses='' -p {PORT}", "start"])
    try:
        if config.database != "postgres":
            create = f'CREATE DATABASE "{config.database.replace(chr(34), chr(34) * 2)}";'
            _run([*psql_argv(config, "postgres"), "-c", create])
        scripts = sorted(INITDB_D.iterdir()) if INITDB_D.is_dir() else []
        for script in scripts:
            _init_script(config, script)
    finally:
        _run([*pg_ctl, "-m", "fast", "stop"])


def _init_script(config: Settings, script: Path) -> None:
    kind = script_kind(script)
    print(f"{sys.argv[0]}: running {script}" if kind else f"{sys.argv[0]}: ignoring {script}", flush=True)
    if kind == "sh":
        _run([str(script)] if os.access(script, os.X_OK) else ["bash", str(script)])
    elif kind == "sql":
        _run([*psql_argv(config, config.database), "-f", str(script)])
    elif kind:
        opener = gzip.open if kind == "sql.gz" else lzma.open
        with opener(script, "rb") as compressed:
            _run(psql_argv(config, config.database), stdin=compressed.read())


def main(args: list[str]) -> None:
    """Set up and exec the server (or exec another command, as the image's entrypoint does)."""
    argv = command(args)
    if sets_up_server(argv):
        config = settings(dict(os.environ))
        if os.geteuid() == 0:
            _become_postgres(config)
        if not (config.pgdata / "PG_VERSION").exists():
            _initdb(config)
            _init_scripts(config)
            print("PostgreSQL init process complete; ready for start up.", flush=True)
        else:
            print("PostgreSQL Database directory appears to contain a database; Skipping initialization",
                  flush=True)  # fmt: skip
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (EntrypointError, OSError) as error:
        print(error, file=sys.stderr, flush=True)
        sys.exit(1)
