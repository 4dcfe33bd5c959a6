"""The postgresql sentinel adapter's fleet-file settings (one line per mistake, a password never repeated)
and what its store decides before it connects. The adapter against a real server:
tests/integration/test_postgresql_sentinels.py."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import load_fleet
from harness.errors import ConfigError
from harness.pgsentinels import Database, PostgresqlStore, addresses
from harness.sentinels import GLOBAL, RESTORED, Where, store_for

SECRET = "hunter2-do-not-print"
SENTINELS = {
    "adapter": "postgresql",
    "primary": "host=db-east,db-west dbname=shop user=dr target_session_attrs=read-write",
    "clusters": {"east": "host=db-east dbname=shop user=dr", "west": "postgresql://dr@db-west/shop"},
    "password_env": "SHOP_DB_PASSWORD",
}


def fleet_file(tmp_path: Path, **changes: Any) -> Path:
    """A two-cluster fleet whose app keeps its sentinels in PostgreSQL, with `changes` to its sentinels
    (None deletes a key)."""
    sentinels = {key: value for key, value in (SENTINELS | changes).items() if value is not None}
    app = {"name": "shop", "namespace": "shop", "workload": "deployment/shop", "sentinels": sentinels}
    document = {
        "name": "f",
        "clusters": [{"name": "east", "region": "e"}, {"name": "west", "region": "w"}],
        "apps": [app],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    return message.removeprefix(f"{path}: ")


def test_a_postgresql_app_loads_with_its_defaults(tmp_path: Path) -> None:
    (app,) = load_fleet(fleet_file(tmp_path)).apps
    spec = app.sentinels
    assert spec is not None and spec.adapter == "postgresql"
    assert (spec.table, spec.connect_timeout, spec.statement_timeout, spec.restored) == (
        "fleetdrill_sentinels",
        5.0,
        5.0,
        None,
    )
    assert isinstance(store_for(app, "apps[0].sentinels"), PostgresqlStore)


BAD = [
    ({"primary": None}, "apps[0].sentinels.primary: missing required field"),
    (
        {"primary": f"host=db user=dr password={SECRET}"},
        "apps[0].sentinels.primary: expected a conninfo without a password (name its variable in "
        "password_env, or use PGPASSFILE), got a conninfo with a password (not shown)",
    ),
    (
        {"clusters": {"west": f"postgresql://dr:{SECRET}@db-west/shop"}},
        "apps[0].sentinels.clusters.west: expected a conninfo without a password",
    ),
    (
        {"restored": f"host=db {SECRET}"},
        "apps[0].sentinels.restored: expected a libpq conninfo ('host=H port=P dbname=D user=U' or a "
        "postgresql:// URI), got a string libpq cannot parse (not shown)",
    ),
    (
        {"primary": " "},
        "apps[0].sentinels.primary: expected a libpq conninfo ('host=H port=P dbname=D user=U' or a "
        "postgresql:// URI), got ' '",
    ),
    (
        {"clusters": {"mars": "host=db"}},
        "apps[0].sentinels.clusters.mars: expected a cluster name (east, west), got 'mars'",
    ),
    (
        {"password_env": "SHOP-DB-PASSWORD"},
        "apps[0].sentinels.password_env: expected an environment variable's name (letters, digits and "
        "'_'), got 'SHOP-DB-PASSWORD'",
    ),
    (
        {"table": "Sentinels; DROP TABLE orders"},
        "apps[0].sentinels.table: expected a lowercase SQL name, optionally schema-qualified",
    ),
    (
        {"connect_timeout": "1500ms"},
        "apps[0].sentinels.connect_timeout: expected a whole number of seconds, at least 2 (libpq's rule), "
        """such as "5s", got '1500ms'""",
    ),
    (
        {"statement_timeout": 0},
        "apps[0].sentinels.statement_timeout: expected a duration",
    ),
    ({"password": SECRET}, "apps[0].sentinels.password: unknown field (did you mean 'password_env'?)"),
]


@pytest.mark.parametrize(
    ("changes", "message"), BAD, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(BAD)]
)
def test_a_mistake_is_one_line_naming_the_field_and_never_the_password(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    assert error_of(fleet_file(tmp_path, **changes)).startswith(message)


def test_a_schema_qualified_table_and_whole_seconds_load(tmp_path: Path) -> None:
    (app,) = load_fleet(fleet_file(tmp_path, table="dr.sentinels", connect_timeout="1m")).apps
    assert app.sentinels is not None and (app.sentinels.table, app.sentinels.connect_timeout) == (
        "dr.sentinels",
        60.0,
    )


def store(tmp_path: Path) -> PostgresqlStore:
    (app,) = load_fleet(fleet_file(tmp_path)).apps
    found = store_for(app, "apps[0].sentinels")
    assert isinstance(found, PostgresqlStore)
    return found


def test_each_target_has_its_database_and_the_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", SECRET)
    sentinels = store(tmp_path)
    primary, west = sentinels.database(GLOBAL), sentinels.database("west")
    assert primary.conninfo == SENTINELS["primary"] and primary.password == SECRET
    assert west.source == "apps[0].sentinels.clusters.west"
    assert (
        west.describe()
        == "west's database (apps[0].sentinels.clusters.west: host=db-west dbname=shop user=dr)"
    )
    assert SECRET not in repr(primary) and SECRET not in primary.describe()
    assert primary.why(RuntimeError(f"server said {SECRET}")) == "RuntimeError: server said ***"
    # a write's step may take the connect timeout once per host of a multi-host conninfo
    assert sentinels.channel(Where(GLOBAL, "")).timeout_s == 2 * 5.0
    assert sentinels.channel(Where("west", "")).timeout_s == 5.0 + 1.0


def test_a_target_without_a_database_or_an_unset_password_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", SECRET)
    sentinels = store(tmp_path)
    with pytest.raises(ConfigError, match=r"set apps\[0\]\.sentinels\.restored \(a libpq conninfo\)"):
        sentinels.records(Where(RESTORED, "http://proxy/"), 0, "s")
    with pytest.raises(ConfigError, match=r"set apps\[0\]\.sentinels\.clusters\.north"):
        sentinels.channel(Where("north", ""))
    monkeypatch.delenv("SHOP_DB_PASSWORD")
    with pytest.raises(
        ConfigError, match=r"SHOP_DB_PASSWORD \(apps\[0\]\.sentinels\.password_env\) is not set"
    ):
        sentinels.channel(Where(GLOBAL, ""))


@pytest.mark.parametrize(
    ("conninfo", "listed"),
    [
        ("host=a,b port=6432,6433", {("a", 6432), ("b", 6433)}),
        ("host=a,b port=6432", {("a", 6432), ("b", 6432)}),  # one port for every host
        ("postgresql://dr@a:6432,b/shop", {("a", 6432), ("b", 5432)}),
        ("dbname=shop", {("", 5432)}),
    ],
)
def test_the_addresses_a_conninfo_lists(conninfo: str, listed: set[tuple[str, int]]) -> None:
    assert addresses(conninfo) == listed


def test_without_password_env_libpq_finds_the_password(tmp_path: Path) -> None:
    """PGPASSWORD or a password file: the adapter passes no password of its own."""
    (app,) = load_fleet(fleet_file(tmp_path, password_env=None)).apps
    database = store_for(app, "apps[0].sentinels")
    assert isinstance(database, PostgresqlStore)
    assert database.database("east") == Database(
        "east", "apps[0].sentinels.clusters.east", "host=db-east dbname=shop user=dr", database.spec
    )
