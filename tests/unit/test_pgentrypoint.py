"""The postgres image's entrypoint: its settings from the environment and the commands it builds."""

from pathlib import Path

import pytest

from harness.localfleet.pgentrypoint import (
    EntrypointError,
    check_password,
    command,
    hba_line,
    initdb_argv,
    script_kind,
    sets_up_server,
    settings,
)


def test_the_images_defaults_fill_what_the_environment_leaves_out() -> None:
    config = settings({"POSTGRES_PASSWORD": "pw"})
    assert (config.user, config.database, config.pgdata) == (
        "postgres",
        "postgres",
        Path("/var/lib/postgresql/data"),
    )
    assert config.auth_method == "scram-sha-256" and config.initdb_args == ()
    named = settings(
        {"POSTGRES_USER": "alice", "PGDATA": "/srv/pg", "POSTGRES_INITDB_ARGS": "--data-checksums -E 'UTF8'"}
    )
    assert (named.user, named.database, named.pgdata) == ("alice", "alice", Path("/srv/pg")), (
        "POSTGRES_DB: the user"
    )
    assert named.initdb_args == ("--data-checksums", "-E", "UTF8")


def test_a_setting_may_come_from_a_file_but_not_from_both(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    assert settings({"POSTGRES_PASSWORD_FILE": str(secret)}).password == "from-a-file"
    with pytest.raises(EntrypointError, match="both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set"):
        settings({"POSTGRES_PASSWORD": "pw", "POSTGRES_PASSWORD_FILE": str(secret)})


def test_an_uninitialised_database_needs_a_password_unless_every_host_is_trusted() -> None:
    with pytest.raises(EntrypointError, match="You must specify POSTGRES_PASSWORD"):
        check_password(settings({}))
    check_password(settings({"POSTGRES_HOST_AUTH_METHOD": "trust"}))
    assert hba_line(settings({"POSTGRES_HOST_AUTH_METHOD": "md5"})) == "\nhost all all all md5\n"


def test_options_go_to_postgres_and_other_commands_run_as_they_are() -> None:
    assert command([]) == ["postgres"]
    assert command(["-c", "max_connections=50"]) == ["postgres", "-c", "max_connections=50"]
    assert command(["bash", "-c", "true"]) == ["bash", "-c", "true"]
    assert sets_up_server(["postgres", "-c", "fsync=off"])
    assert not sets_up_server(["postgres", "--version"]) and not sets_up_server(["postgres", "-C", "port"])
    assert not sets_up_server(["bash"])


def test_initdb_gets_the_user_the_password_file_the_wal_folder_and_the_extra_args() -> None:
    config = settings(
        {"POSTGRES_USER": "app", "POSTGRES_INITDB_WALDIR": "/wal", "POSTGRES_INITDB_ARGS": "-k"}
    )
    argv = initdb_argv(config, Path("/tmp/pw"))
    assert argv == ["initdb", "--username=app", "--pwfile=/tmp/pw", "--waldir=/wal", "-k"]
    assert initdb_argv(settings({}), None) == ["initdb", "--username=postgres"]


def test_init_scripts_run_by_their_suffix() -> None:
    kinds = [script_kind(Path(n)) for n in ("a.sh", "b.sql", "c.sql.gz", "d.sql.xz", "e.txt", "f.sql.zst")]
    assert kinds == ["sh", "sql", "sql.gz", "sql.xz", "", ""]
