"""The fleet file (fleet.yaml): its typed schema, loading with one-line errors, writing, and its JSON schema.

Regenerate the committed schema with: python -m harness.config > harness/schema/fleet.schema.json
"""

import difflib
import functools
import json
import re
import string
from abc import abstractmethod
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializeAsAny,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    model_validator,
)

from harness import units
from harness.errors import ConfigError
from harness.infra.registry import STEPS, Step, handing_over, restoring
from harness.promlookback import LookbackError, lookback
from harness.traffic import STATUS_SPEC, status_codes

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
WORKLOAD = r"^(deployment|statefulset|daemonset)/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$"
HEADER = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_PATTERNS = {  # what a regular expression means, for error messages
    DNS_LABEL: "a DNS label (lowercase letters, digits and '-', at most 63)",
    WORKLOAD: "kind/name with kind one of deployment, statefulset, daemonset",
    r"^/": "a path starting with '/'",
    HEADER: "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
}
_DURATION = 'a duration such as "30s", "1m30s", "250ms" or a number of seconds'
_FRACTION = 'a fraction in (0, 1] such as 0.999 or "99.9%"'


class _Invalid(ValueError):
    """A value broke a rule of the fleet file; `loc` says where, below the model that checked it."""

    def __init__(self, expected: str, got: object, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(f"expected {expected}, got {_show(got)}")
        self.loc = loc


def _show(value: object) -> str:
    """A short repr of a bad value: containers are named, not dumped."""
    if isinstance(value, dict | list | tuple):
        return ("a mapping" if isinstance(value, dict) else "a list") if value else repr(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _duration(value: object) -> float:
    try:
        return units.parse_duration(value)
    except ValueError:
        raise _Invalid(_DURATION, value) from None


def _positive_duration(value: object) -> float:
    if seconds := _duration(value):
        return seconds
    raise _Invalid(f"{_DURATION}, above zero", value)


def _fraction(value: object) -> float:
    try:
        return units.parse_fraction(value)
    except ValueError:
        raise _Invalid(_FRACTION, value) from None


def _share(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise _Invalid("a share in [0, 1] such as 0.5", value)


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("an http(s) URL", value)
    return value


def _write_target(value: str) -> str:
    return value if value.startswith("/") else _url(value)


def _status(value: object) -> int | str:
    """An accepted-status spec as written: a status code or a class such as "2xx"."""
    try:
        status_codes(value)
    except ValueError:
        raise _Invalid(STATUS_SPEC, value) from None
    return cast(int | str, value)


def _some_statuses(statuses: tuple[int | str, ...]) -> tuple[int | str, ...]:
    if not statuses:
        raise _Invalid('at least one status code or class such as "2xx"', [])
    return statuses


def _some(clusters: tuple["Cluster", ...]) -> tuple["Cluster", ...]:
    if not clusters:
        raise _Invalid("at least one cluster", [])
    return clusters


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """`path` with "~" expanded, relative to the fleet file's folder (the working directory without one)."""
    base = (info.context or {}).get("base") or Path.cwd()
    return base / path.expanduser()


_SECONDS = {"type": "number", "minimum": 0}
_DURATION_SCHEMA = WithJsonSchema(
    {"anyOf": [_SECONDS, {"type": "string", "pattern": units.DURATION_PATTERN}]}
)
_SHARE = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
_FRACTION_SCHEMA = WithJsonSchema({"anyOf": [_SHARE, {"type": "string", "pattern": units.PERCENT_PATTERN}]})
_AS_TEXT = PlainSerializer(units.format_duration)
Duration = Annotated[float, BeforeValidator(_duration), _AS_TEXT, _DURATION_SCHEMA]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration), _AS_TEXT, _DURATION_SCHEMA]
Availability = Annotated[float, BeforeValidator(_fraction), _FRACTION_SCHEMA]
Share = Annotated[
    float, BeforeValidator(_share), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})
]
Name = Annotated[str, Field(pattern=DNS_LABEL)]
Text = Annotated[str, Field(min_length=1)]
CloudKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Url = Annotated[str, AfterValidator(_url), WithJsonSchema({"type": "string", "format": "uri"})]
Kubeconfig = Annotated[Path, AfterValidator(_resolve)]
FilePath = Kubeconfig
"""A file named in the fleet file, resolved as a kubeconfig is (relative to the fleet file, "~" expanded)."""
_STATUS_SCHEMA = {
    "anyOf": [{"type": "integer", "minimum": 200, "maximum": 499}, {"type": "string", "pattern": "^[234]xx$"}]
}
Status = Annotated[int | str, BeforeValidator(_status), WithJsonSchema(_STATUS_SCHEMA)]
HeaderName = Annotated[str, Field(pattern=HEADER)]
Argv = Annotated[tuple[Text, ...], Field(min_length=1)]
UrlPath = Annotated[str, Field(pattern=r"^/")]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PATTERNS[ENV_NAME] = "an environment variable's name (letters, digits and '_')"
EnvName = Annotated[str, Field(pattern=ENV_NAME)]
Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Prometheus(_Model):
    """A Prometheus server's HTTP API that holds the cluster's metrics."""

    url: Url
    """Base URL of its HTTP API (the /api/v1/... paths are appended)."""
    bearer_token_env: EnvName | None = None
    """The environment variable holding a bearer token to send (managed Prometheus, a proxy in front)."""
    token_command: Argv | None = None
    """A command (argv, no shell) whose standard output is a bearer token (an exec-style credential such
    as `gcloud auth print-access-token`): run before the first request, again every token_refresh and
    whenever the server answers 401 or 403."""
    token_refresh: PositiveDuration = 300.0
    """How long a token_command's token is used before the command runs again."""
    username: Text | None = None
    """The user of HTTP basic auth; its password comes from the variable password_env names."""
    password_env: EnvName | None = None
    """The environment variable holding the basic-auth password."""
    ca_file: FilePath | None = None
    """A PEM CA bundle that signs the server's certificate (relative to the fleet file, "~" expanded);
    unset: the system's CAs."""
    timeout: PositiveDuration = 10.0
    """Longest one request may take (a query that runs longer is an error, never a pass)."""
    ingest_delay: PositiveDuration | None = None
    """For a server without /api/v1/targets (a remote-write store: Mimir, Amazon Managed Prometheus):
    how long after a sample's timestamp it may take to answer with it. A drill then waits that long after
    its window before judging; unset, it reads the server's targets to know when the window's data is
    whole."""

    @model_validator(mode="after")
    def _one_credential(self) -> "Prometheus":
        parts = urlsplit(self.url)
        if parts.password is not None:
            raise _Invalid(
                "a URL without a password (name its variable in password_env)",
                _Withheld("a URL with a password"),
                ("url",),
            )
        chosen = [n for n in ("bearer_token_env", "token_command", "username") if getattr(self, n)]
        if len(chosen) > 1:
            raise _Invalid("at most one of bearer_token_env, token_command, username", chosen)
        if (self.username is None) != (self.password_env is None):
            raise _Invalid("username and password_env together", "only one of them")
        return self


class Cluster(_Model):
    """One Kubernetes cluster of the fleet."""

    name: Name
    """Cluster name used by drills, reports and endpoints."""
    context: Text | None = None
    """Kubeconfig context of the cluster; defaults to the cluster's name."""
    kubeconfig: Kubeconfig | None = None
    """Kubeconfig file for this cluster, if not the fleet's (relative to the fleet file, "~" expanded)."""
    readonly_context: Text | None = None
    """Context of a read-only identity, used for checks."""
    region: Text
    """Region the cluster runs in."""
    zones: tuple[Text, ...] = ()
    """Availability zones of the cluster's nodes."""
    cloud: dict[CloudKey, Text] = {}
    """The cluster's ids in its cloud for the infrastructure provider's steps that act on it (an EKS
    cluster and nodegroup name, subnet ids, a GCP project, an AKS resource group): `{cloud[KEY]}` in a
    step's arguments, beside {region} and {zones}."""
    role: Literal["active", "passive", "standby"] = "standby"
    """active serves traffic, passive is warm and takes over, standby is restored into from backups."""
    environment: Environment = "dev"
    """prod clusters need safety.allow_prod for destructive drills; the environment isolation drill faults
    every other cluster and measures prod (a fleet whose clusters are all dev is not segmented)."""
    prometheus: Prometheus | None = None
    """The cluster's Prometheus, for objectives and aborts on metrics."""


CLUSTER_PLACEHOLDER = "{cluster}"
"""In a PromQL query: the name of the cluster it is evaluated for (the literal text, as PromQL's own
braces never hold a bare word)."""
Comparison = Literal["<", "<=", ">", ">="]


def _check_promql(query: str) -> None:
    """Refuse a query that does not parse as PromQL (Prometheus' grammar and types), with the parser's
    reason: found when the fleet file loads, not when a drill asks Prometheus."""
    try:
        lookback(query.replace(CLUSTER_PLACEHOLDER, "cluster"))
    except LookbackError as error:
        raise _Invalid(f"a PromQL query ({error})", query, ("query",)) from None


class PromqlObjective(_Model):
    """An objective from the app's own metrics: every value of a PromQL query over a window of the drill
    compared with a bound. A query that returns no data is an error, never a pass."""

    name: Name
    """The objective's name in verdicts and reports."""
    query: Text
    """A PromQL expression (e.g. an error ratio); {cluster} is replaced by the cluster's name when scope
    is cluster."""
    comparison: Comparison
    """How each value must compare with bound: <, <=, > or >=."""
    bound: float
    """The bound every value of every series the query returns must keep."""
    scope: Literal["cluster", "fleet"] = "fleet"
    """fleet: the query runs once on the fleet-wide Prometheus (the top-level `prometheus`); cluster: once
    per cluster the app runs in (apps[].endpoints; every cluster without them), on the cluster's
    Prometheus (else the fleet-wide one, then the query must use {cluster}), or split by cluster_label."""
    cluster_label: Text | None = None
    """With scope cluster: run the query once on the fleet-wide Prometheus and judge each cluster by the
    series whose label of this name holds the cluster's name (a federated or Thanos view)."""
    window: Literal["drill", "recovery"] = "drill"
    """drill: from the first probe to the last; recovery: from the measured recovery (t0 + RTO) on."""
    step: PositiveDuration | None = None
    """The range query's resolution (default: the window over 500 points, at least 1 s)."""
    max_gap: PositiveDuration = 10.0
    """A longer stretch of the window without any value (at its ends too) is missing data: an error. A
    series that appears only once trouble starts (a counter first exported at its first error) shows as
    such a gap, so keep it short; raise it for scrape intervals past a few seconds."""
    slo_target: Availability | None = None
    """The SLO the query's error ratio (0..1) is measured against: the figures then hold the error budget's
    burn rate over the window and the share of slo_period's budget the drill spent."""
    slo_period: PositiveDuration = 30 * 86400.0
    """The SLO's period, whose budget the drill's share is of."""

    @model_validator(mode="after")
    def _scope_fits(self) -> "PromqlObjective":
        if self.scope == "fleet" and CLUSTER_PLACEHOLDER in self.query:
            raise _Invalid("a query without {cluster} (scope is fleet; set scope: cluster)", self.query)
        if self.scope == "fleet" and self.cluster_label is not None:
            raise _Invalid("no cluster_label with scope fleet", self.cluster_label, ("cluster_label",))
        _check_promql(self.query)
        return self

    def reads_back(self) -> float:
        """How far back the query's value at a moment reads, in seconds (harness.promlookback)."""
        return lookback(self.query.replace(CLUSTER_PLACEHOLDER, "cluster"))


class Objectives(_Model):
    """What an app must achieve through a drill; each one is optional."""

    rto: Duration | None = None
    """Recovery time objective: longest time from the fault to stable recovery."""
    rpo: Duration | None = None
    """Recovery point objective: most data loss allowed, as time."""
    availability: Availability | None = None
    """Fewest successful probes allowed, as a fraction of all probes in the drill."""
    latency: PositiveDuration | None = None
    """Latency bound: a probe slower than this counts as failed."""
    spill: Duration | None = None
    """Burst: longest time from a load above the primary's capacity until another cluster serves it."""
    spill_return: Duration | None = None
    """Burst: longest time from the load dropping until the primary alone serves again."""
    promql: tuple[PromqlObjective, ...] = ()
    """Objectives from the app's metrics in Prometheus, judged after every drill that judges the app."""


def placeholders(template: str) -> list[str]:
    """The {placeholders} of a template; ValueError when its braces do not parse."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


CLOUD_KEY = re.compile(r"^cloud\[([A-Za-z_][A-Za-z0-9_]*)\]$")
"""A cloud id placeholder, {cloud[KEY]}: the key of clusters[].cloud."""
CLOUD_IN_TEXT = re.compile(r"\{cloud\[([A-Za-z_][A-Za-z0-9_]*)\]\}")
"""{cloud[KEY]} anywhere in a text (a chaostoolkit step's strings)."""


def _allowed(placeholder: str, allowed: tuple[str, ...]) -> bool:
    """`placeholder` is one of `allowed`; "cloud" in `allowed` stands for {cloud[KEY]}."""
    if "cloud" in allowed and CLOUD_KEY.match(placeholder):
        return True
    return placeholder in allowed and placeholder != "cloud"


def _check_templates(allowed: tuple[str, ...], templates: list[str], loc: tuple[str | int, ...]) -> None:
    for i, template in enumerate(templates):
        try:
            bad = [name for name in placeholders(template) if not _allowed(name, allowed)]
        except ValueError:
            bad = [template]
        if bad:
            wanted = ", ".join("{cloud[KEY]}" if name == "cloud" else "{" + name + "}" for name in allowed)
            raise _Invalid(f"text whose only placeholders are {wanted}", template, (*loc, i))


def fill_json(template: Any, values: dict[str, Any]) -> Any:
    """A JSON body template with its values: a string that is exactly "$NAME" becomes the value itself (a
    number stays a number), and $NAME inside a longer string becomes its text."""
    if isinstance(template, str):
        if template.startswith("$") and template[1:] in values:
            return values[template[1:]]
        return string.Template(template).safe_substitute(values)
    if isinstance(template, list | tuple):
        return [fill_json(item, values) for item in template]
    if isinstance(template, dict):
        return {key: fill_json(item, values) for key, item in template.items()}
    return template


Model = _Model
"""The base of the fleet file's models, for those outside this module (a failover strategy's settings)."""
Invalid = _Invalid
"""What a fleet-file model outside this module (a failover strategy's settings) raises for a bad value."""
check_templates = _check_templates
"""Check that templates (argv lists) use only the allowed {placeholders}, for the same models."""


class Failover(_Model):
    """How a drill fails an app over to another cluster: `strategy`, and beside it the settings of the
    strategies (harness.strategies: each adds its own fields by subclassing this model)."""

    strategy: str = "promote"
    """Which failover strategy (harness.strategies): promote, observe, command, or one registered there."""


@functools.cache
def _failover_model(
    settings: tuple[type[BaseModel] | None, ...], names: tuple[str, ...], doc: str
) -> type[Failover]:
    bases = tuple(dict.fromkeys(model for model in settings if model is not None)) or (Failover,)
    strategy: Any = Literal[names]  # type: ignore[valid-type]
    return create_model(
        "Failover",
        __base__=bases,
        __doc__=Failover.__doc__,
        __module__=__name__,
        strategy=(strategy, Field("promote", description=doc)),
    )


def failover_model() -> type[Failover]:
    """apps[].failover's model: `strategy`, one of the registered strategies, and the fields of each
    strategy's settings."""
    from harness.strategies import all_strategies

    strategies = all_strategies().values()
    doc = "; ".join(f"{s.name}: {s.does}" for s in strategies) + "."
    return _failover_model(tuple(s.settings for s in strategies), tuple(s.name for s in strategies), doc)


def _as_failover(value: Any) -> Failover:
    """apps[].failover validated by failover_model()."""
    model = failover_model()
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value.model_dump() if isinstance(value, Failover) else value)
    except ValidationError as exc:
        loc, text = _located(exc.errors(include_url=False)[0], model)
        raise _Nested(text, loc) from None


WriteTarget = Annotated[str, AfterValidator(_write_target)]


class HttpWrite(_Model):
    """How a sentinel is written over HTTP: a request whose JSON body is `body` with the sentinel's values."""

    path: WriteTarget
    """A path on the app's endpoints (the global one, or a cluster's for direct writes) or an absolute URL."""
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    """The request's method; any 2xx answer acknowledges the write, another refuses it."""
    body: dict[str, Any] = {"seq": "$seq", "payload": "fleetdrill sentinel", "stream": "$stream"}
    """The JSON body: a string "$seq" becomes the sentinel's number, and $seq and $stream inside a string
    become its number and stream."""


class HttpRead(_Model):
    """How sentinels are read back over HTTP: `GET {path}?since=SEQ&stream=STREAM`, page by page."""

    path: UrlPath
    """A path on the app's endpoints."""
    items: Text
    """The answer's field listing the records, each a JSON object with the record's `seq`."""
    next: Text = "next"
    """The answer's field holding the `since` of the next page (null or absent on the last page)."""


class HttpSentinels(_Model):
    """Sentinels kept by the app's own HTTP API."""

    adapter: Literal["http"]
    write: HttpWrite
    """How a sentinel is written."""
    read: HttpRead
    """How sentinels are read back from one cluster's app (or a restored copy)."""


SENTINEL_WRITE_PLACEHOLDERS = ("seq", "stream", "target", "endpoint")
SENTINEL_READ_PLACEHOLDERS = ("since", "stream", "cluster", "context", "namespace", "endpoint")


class CommandSentinels(_Model):
    """Sentinels kept wherever your scripts keep them (a database table, a queue): argv lists, no shell."""

    adapter: Literal["command"]
    write: Argv
    """Write one sentinel: gets {seq}, {stream}, {target} (the cluster written to, or "global") and its
    {endpoint}. Exit 0 acknowledges the write, another status refuses it, a timeout leaves it unknown; the
    first word of its output, if any, names the cluster that took it."""
    read: Argv
    """Print the sentinels of {stream} above {since} kept in {cluster} (kubeconfig {context}, the app in
    {namespace}, at {endpoint}), one per line: a number, or a JSON object with its `seq`."""
    timeout: PositiveDuration = 5.0
    """Longest a write or read may run."""

    @model_validator(mode="after")
    def _known_placeholders(self) -> "CommandSentinels":
        _check_templates(SENTINEL_WRITE_PLACEHOLDERS, list(self.write), ("write",))
        _check_templates(SENTINEL_READ_PLACEHOLDERS, list(self.read), ("read",))
        return self


class _Withheld:
    """A bad value the fleet file holds that an error must not repeat: it may hold a password."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"{self.what} (not shown)"


def _conninfo(value: str) -> str:
    """A libpq connection string without a password (the password comes from password_env or libpq)."""
    from psycopg import Error  # here: psycopg loads only for fleet files that use it
    from psycopg.conninfo import conninfo_to_dict

    expected = "a libpq conninfo ('host=H port=P dbname=D user=U' or a postgresql:// URI)"
    if not value.strip():
        raise _Invalid(expected, value)
    try:
        params = conninfo_to_dict(value)
    except Error:
        raise _Invalid(expected, _Withheld("a string libpq cannot parse")) from None
    if "password" in params:
        expected = "a conninfo without a password (name its variable in password_env, or use PGPASSFILE)"
        raise _Invalid(expected, _Withheld("a conninfo with a password"))
    return value


def _whole_seconds(value: object) -> float:
    seconds = _duration(value)
    if seconds >= 2 and seconds.is_integer():
        return seconds
    raise _Invalid('a whole number of seconds, at least 2 (libpq\'s rule), such as "5s"', value)


Conninfo = Annotated[str, AfterValidator(_conninfo), Field(min_length=1)]
ConnectTimeout = Annotated[float, BeforeValidator(_whole_seconds), _AS_TEXT, _DURATION_SCHEMA]
SQL_NAME = r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$"
_PATTERNS[SQL_NAME] = "a lowercase SQL name, optionally schema-qualified (e.g. fleetdrill_sentinels)"


class PostgresqlSentinels(_Model):
    """Sentinels kept in a table of the app's own PostgreSQL database: written to the primary, read back
    from one cluster's database. The conninfo strings hold no password: it comes from the variable
    `password_env` names, else from libpq itself (PGPASSWORD, PGPASSFILE or ~/.pgpass)."""

    adapter: Literal["postgresql"]
    primary: Conninfo
    """Where writes go: the primary as the app reaches it. A multi-host conninfo with
    target_session_attrs=read-write follows a failover (libpq picks the host that takes writes)."""
    clusters: dict[Name, Conninfo] = {}
    """Each cluster's database by cluster name: read back after failover, and written directly (the
    split-brain check)."""
    restored: Conninfo | None = None
    """A restored copy's database (backup-restore drills), reached by its own conninfo: SQL does not go
    through the API server's proxy the http adapter reads a restored app through."""
    password_env: Annotated[str, Field(pattern=ENV_NAME)] | None = None
    """The environment variable holding the password (unset: libpq's PGPASSWORD or password file)."""
    table: Annotated[str, Field(pattern=SQL_NAME)] = "fleetdrill_sentinels"
    """The sentinel table (seq, stream, payload, written_at), created on the primary when absent."""
    connect_timeout: ConnectTimeout = 5.0
    """Longest a connection may take to open, per host: whole seconds, at least 2 (as libpq counts)."""
    statement_timeout: PositiveDuration = 5.0
    """Longest a write or read may run: the server cancels it then, and the harness gives up a second
    later (a server that stops answering leaves the write unknown)."""


Sentinels = Annotated[HttpSentinels | CommandSentinels | PostgresqlSentinels, Field(discriminator="adapter")]


class ServedBy(_Model):
    """Where the app's answers say who served them: one response header or one field of a JSON body."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["header"]}, {"required": ["json_field"]}]}
    )
    header: HeaderName | None = None
    """A response header whose value names the serving cluster, up to its first "/" (e.g. "eu-west/pod-1")."""
    json_field: Text | None = None
    """A top-level field of a JSON response body whose value names the serving cluster, as for header."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "ServedBy":
        if (self.header is None) == (self.json_field is None):
            got = {"header": self.header, "json_field": self.json_field}
            raise _Invalid("exactly one of header, json_field", {k: v for k, v in got.items() if v})
        return self


DnsServer = Annotated[str, Field(pattern=r"^[0-9.]+:[0-9]{1,5}$|^[0-9.]+$")]


class GlobalDns(_Model):
    """A DNS-based global load balancer (k8gb, Route 53 health checks): what `observe` watches."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    """The app's global name, as clients resolve it."""
    authoritative: DnsServer
    """The server authoritative for the name, ADDR[:PORT] (port 53 unless given)."""
    resolver: DnsServer | None = None
    """The runner's resolver, ADDR[:PORT]; the global endpoint's probes resolve through it when set."""
    health_interval: PositiveDuration
    """Seconds between the load balancer's health checks of each cluster."""
    failure_threshold: Annotated[StrictInt, Field(ge=1)]
    """Failed health checks in a row that take a cluster out of the answer."""


class App(_Model):
    """An application deployed across the fleet, probed during drills."""

    name: Name
    """App name used by drills and reports."""
    namespace: Name
    """Namespace the app runs in, in every cluster."""
    workload: Annotated[str, Field(pattern=WORKLOAD)]
    """The app's workload as kind/name, e.g. deployment/checkout."""
    service: Name | None = None
    """The app's Service."""
    global_endpoint: Url | None = None
    """URL clients use (GSLB or global load balancer)."""
    endpoints: dict[str, Url] = {}
    """URL of the app in each cluster, by cluster name."""
    sentinels: Sentinels | None = None
    """Where numbered sentinel records are written during drills and read back after failover or restore,
    for RPO and data integrity (adapter http, command or postgresql); without it no drill can judge RPO."""
    health_path: UrlPath = "/"
    """Path probed for health on the endpoints."""
    accepted_statuses: Annotated[
        tuple[Status, ...], AfterValidator(_some_statuses), Field(json_schema_extra={"minItems": 1})
    ] = ("2xx",)
    """The statuses of a successful probe: codes (200-499) and classes ("2xx", "3xx", "4xx"); any other
    answer is a failed probe (5xx always is)."""
    served_by: ServedBy | None = None
    """Where answers name the cluster that served them; declared, an answer without it is a failed probe
    (not the app: an ingress default backend, a proxy), and drills can check which cluster serves."""
    objectives: Objectives = Objectives()
    """What the app must achieve through a drill."""
    failover: Annotated[
        SerializeAsAny[Failover], PlainValidator(_as_failover, json_schema_input_type=Failover)
    ] = Field(default_factory=lambda: failover_model()())
    """How drills fail the app over."""
    dns: GlobalDns | None = None
    """A DNS-based failover of the global endpoint: the answers and TTLs observed, the RTO split in phases."""
    data_namespaces: tuple[Name, ...] = ()
    """Namespaces of the app's own data services (its database in a namespace of its own), backed up with the
    app's namespace and restored with it: the backup-restore drill reads the sentinels back from them."""

    @property
    def backed_up_namespaces(self) -> tuple[str, ...]:
        """What a backup of the app holds, and its readiness checks: its namespace, then data_namespaces."""
        return (self.namespace, *(n for n in self.data_namespaces if n != self.namespace))


class BackupStore(_Model):
    """An S3-compatible object store Velero's storage location points at."""

    url: Url
    """The store's S3 endpoint."""
    bucket: Text
    """The bucket backups are written to."""
    region: Text
    """The region the store signs requests for."""


class Velero(_Model):
    """How to reach Velero for backups and restores."""

    binary: Text = "velero"
    """The velero CLI: a path or a name on PATH."""
    namespace: Name = "velero"
    """Namespace Velero is installed in."""
    storage_location: Text = "default"
    """Backup storage location to back up to and restore from."""
    sync_period: Duration | None = None
    """Velero's backup sync period here: a cluster sees a backup made by another only after a sync (its
    controller wakes once a minute, so a shorter period still means up to a minute)."""
    restart_to_sync: StrictBool = False
    """Restart the Velero server of the cluster restored into (as `kubectl rollout restart` does) once a
    drill's backup Completed: a server syncs the storage location as it starts, so the DR cluster sees
    the backup in seconds instead of at the next once-a-minute sync. Needs patch on deployments in the
    Velero namespace there."""
    store: BackupStore | None = None
    """The object store the storage location points at, for reference (Velero reaches it, not the harness)."""
    max_backup_age: Duration | None = None
    """How old the newest Completed backup of an app may be (default: the app's RPO objective); set it when
    replication meets the RPO and backups are the last line of defence."""


HANDLE_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")
"""A chaostoolkit lose step's `handle`: keys and list indexes joined by "." (experiment.id)."""


def _gets(step: Step) -> str:
    return ", ".join("{cloud[KEY]}" if name == "cloud" else "{" + name + "}" for name in step.placeholders)


class _StepSettings(_Model):
    """What the settings of a provider driven by the fleet file share: one field per step of the registry
    (harness.infra.registry), added by `with_steps`."""

    step_type: ClassVar[Any]
    """The type of one step's setting."""

    @classmethod
    @abstractmethod
    def step_doc(cls, step: Step) -> str:
        """The documentation of one step's field."""

    @classmethod
    def with_steps(cls) -> type["_StepSettings"]:
        """The model with a field per registered step (made once per set of steps)."""
        return _with_steps(cls, tuple(STEPS.values()))

    def step(self, name: str) -> Any:
        """The setting of the step `name`; None when it is left out (or was registered after this model)."""
        return getattr(self, name, None)


@functools.cache
def _with_steps(base: type[_StepSettings], steps: tuple[Step, ...]) -> type[_StepSettings]:
    fields: dict[str, Any] = {
        step.name: (base.step_type | None, Field(None, description=base.step_doc(step))) for step in steps
    }
    return create_model(base.__name__, __base__=base, __doc__=base.__doc__, __module__=__name__, **fields)


class CommandSettings(_StepSettings):
    """infrastructure.settings of the command provider: your scripts, one command per fault step.

    Each is an argv list (no shell); {cluster} and its kubeconfig {context}, {region}, {zones} and its
    cloud ids {cloud[KEY]} (clusters[].cloud), {clusters}, {contexts} and {regions} (comma-separated),
    {name} (a partition's), {node} and {handle} (the last line a lose step printed on stdout that is not
    blank, given to its restore step: e.g. the id of what it started) are filled in where the step has
    them. A step left out refuses the faults that need it.
    """

    step_type: ClassVar[Any] = Argv
    timeout: PositiveDuration = 600.0
    """Longest a command may run."""

    @classmethod
    def step_doc(cls, step: Step) -> str:
        text = f"{step.does}; gets {_gets(step)}."
        if step.hands_over:
            text += f" Its last line of output is {step.restored_by}'s {{handle}}."
        if step.looks:
            text += " Exit 0 for yes, 1 for no; another status is an error."
        return text

    @model_validator(mode="after")
    def _known_placeholders(self) -> "CommandSettings":
        for step in STEPS.values():
            _check_templates(step.placeholders, list(self.step(step.name) or ()), (step.name,))
        return self


class ChaosToolkitSettings(_StepSettings):
    """infrastructure.settings of the chaostoolkit provider: a Chaos Toolkit activity provider per step.

    Each step is an activity's `provider` mapping (type python with module, func and arguments; or process,
    or http), run by chaoslib; string arguments get the same placeholders as the command provider's. The
    restore steps are the rollbacks of the lose steps, and get as {handle} what the lose step's activity
    returned: a python function's value (its JSON), a process's last line of stdout, an http call's body;
    with `handle: PATH` beside the lose step's provider keys, only the part at PATH (e.g. experiment.id).
    """

    model_config = ConfigDict(populate_by_name=True)
    step_type: ClassVar[Any] = dict[str, Any]
    configuration: dict[str, Any] = {}
    """Chaos Toolkit configuration passed to every activity, with the step's placeholders filled in: e.g.
    `aws_region: "{region}"` is the region of the cluster the step acts on (chaosaws reads aws_region)."""
    secrets: dict[str, Any] = {}
    """Chaos Toolkit secrets by scope (never logged); a python activity gets the scopes its `secrets` list
    names, placeholders filled: `secrets: ["azure-{cloud[subscription]}"]` gives each cluster its own."""

    @classmethod
    def step_doc(cls, step: Step) -> str:
        lose = restoring(step)
        text = f"Rollback of {lose.name}. " if lose else ""
        text += f"{step.does}; gets {_gets(step)}."
        if step.hands_over:
            text += f" What it returns is {step.restored_by}'s {{handle}}."
        if step.looks:
            text += " A probe: a python probe returns True or False, a process probe exits 0 or 1."
        return text

    @model_validator(mode="after")
    def _handles_where_handed(self) -> "ChaosToolkitSettings":
        """`handle` (fleetdrill's key, not the activity's) only in a lose step, as a path."""
        for step in STEPS.values():
            if "handle" not in (mapping := self.step(step.name) or {}):
                continue
            path = mapping["handle"]
            if not step.hands_over:
                handing = ", ".join(lose.name for lose in handing_over())
                raise _Invalid(f"no handle (only {handing} hand one over)", path, (step.name, "handle"))
            if not (isinstance(path, str) and HANDLE_PATH.fullmatch(path)):
                expected = 'a path into what the step returns, keys and list indexes joined by "."'
                raise _Invalid(expected, path, (step.name, "handle"))
        return self


def provider_settings(provider: str) -> type[_StepSettings] | None:
    """The model of a provider's settings, a field per registered step; None for a provider that checks its
    own (localfleet) or has none."""
    base = {"command": CommandSettings, "chaostoolkit": ChaosToolkitSettings}.get(provider)
    return None if base is None else base.with_steps()


def _settings_schema(schema: dict[str, Any]) -> None:
    """The settings of each provider in the JSON schema, chosen by `provider`."""
    schema["allOf"] = [
        {
            "if": {"properties": {"provider": {"const": name}}, "required": ["provider"]},
            "then": {"properties": {"settings": model.model_json_schema(by_alias=True)}},
        }
        for name in ("command", "chaostoolkit")
        if (model := provider_settings(name)) is not None
    ]


class _Nested(_Invalid):
    """An error found in a model validated inside a validator, already worded."""

    def __init__(self, text: str, loc: tuple[str | int, ...]) -> None:
        ValueError.__init__(self, text)
        self.loc = loc


class Infrastructure(_Model):
    """The provider for faults the Kubernetes API cannot express (cluster loss, WAN partition)."""

    model_config = ConfigDict(json_schema_extra=_settings_schema)
    provider: Literal["none", "localfleet", "command", "chaostoolkit"] = "none"
    """Which provider; none disables infrastructure faults."""
    settings: dict[str, Any] = {}
    """Provider settings: see CommandSettings, ChaosToolkitSettings; localfleet's are its folder (dir)."""
    effect_timeout: PositiveDuration | None = None
    """How long a cluster loss or WAN partition the provider injects has, from the start of injection, to
    show its effect before the drill is an error (default 30s): a cloud step that returns before the
    instances stop may need minutes."""

    @model_validator(mode="after")
    def _settings_fit(self) -> "Infrastructure":
        model = provider_settings(self.provider)
        if model is not None:
            try:
                model.model_validate(self.settings)
            except ValidationError as exc:
                loc, text = _located(exc.errors(include_url=False)[0], model)
                raise _Nested(text, ("settings", *loc)) from None
        return self

    def typed_settings(self) -> BaseModel | None:
        """The settings as the provider's model (None when the provider checks its own)."""
        model = provider_settings(self.provider)
        return None if model is None else model.model_validate(self.settings)


class BlastRadius(_Model):
    """Limits on how much of the fleet one drill may break."""

    max_clusters: Annotated[StrictInt, Field(ge=1)] | None = None
    """Most clusters a drill may fault at once."""
    max_percent: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    """Most of the fleet's clusters a drill may fault at once, in percent."""


class AbortQuery(_Model):
    """Stop a drill when a PromQL query's value crosses a bound."""

    model_config = ConfigDict(populate_by_name=True)
    name: Name
    """The condition's name, in the abort's reason."""
    query: Text
    """A PromQL expression evaluated at each check; no data, or a failed query, stops the drill (write
    `... or vector(0)` where no series means healthy)."""
    above: float | None = None
    """Abort when any series' value is above this."""
    below: float | None = None
    """Abort when any series' value is below this."""
    for_: Duration = Field(0.0, alias="for")
    """How long the condition must hold, check after check."""
    prometheus: Name | None = None
    """The cluster whose Prometheus answers (unset: the fleet-wide one)."""

    @model_validator(mode="after")
    def _one_bound(self) -> "AbortQuery":
        if (self.above is None) == (self.below is None):
            raise _Invalid("exactly one of above, below", {"above": self.above, "below": self.below})
        _check_promql(self.query)
        return self


class AbortAlert(_Model):
    """Stop a drill when a Prometheus alert fires (its state firing in /api/v1/alerts)."""

    alert: Text
    """The alert's name (its alertname label)."""
    prometheus: Name | None = None
    """The cluster whose Prometheus evaluates the rule (unset: the fleet-wide one)."""


class Abort(_Model):
    """Stop a drill and revert its faults: when global availability stays too low, a PromQL condition holds
    or an alert fires (at least one of them)."""

    model_config = ConfigDict(populate_by_name=True)
    availability_below: Availability | None = None
    """Abort when availability over the window falls below this."""
    for_: Duration = Field(0.0, alias="for")
    """How long availability must stay below the threshold."""
    promql: tuple[AbortQuery, ...] = ()
    """Abort when one of these PromQL conditions holds (checked every abort check)."""
    alerts: tuple[AbortAlert, ...] = ()
    """Abort when one of these alerts fires."""

    @model_validator(mode="after")
    def _some_condition(self) -> "Abort":
        if self.availability_below is None and not self.promql and not self.alerts:
            raise _Invalid("at least one of availability_below, promql, alerts", {})
        return self


class Safety(_Model):
    """Guards for destructive drills."""

    allowlist: tuple[Text, ...] = ()
    """Contexts destructive drills may touch; each must be a context of a cluster."""
    allow_prod: StrictBool = False
    """Allow destructive drills on prod clusters."""
    blast_radius: BlastRadius = BlastRadius()
    """Limits on how much one drill may break."""
    abort: Abort | None = None
    """When to stop a drill early."""
    lease_duration: PositiveDuration = 300.0
    """Expiry of the drill lease (a Lease per faulted cluster) that stops two drills colliding."""
    as_found_timeout: PositiveDuration = 120.0
    """Longest a destructive drill waits, after reverting its faults and failing back, for the fleet to be as
    it found it (harness.steadystate); what has not come back by then fails the drill, named."""
    lease_cluster: Name | None = None
    """The cluster that holds every drill lease. Unset, the lease of a faulted cluster is held in each cluster
    the drill does not fault; set it (e.g. to a management cluster) for drills that fault every cluster."""


STRESS_IMAGE = "alexeiled/stress-ng"
"""A public image whose entrypoint is stress-ng (the local fleet's catalogue runs Debian's stress-ng)."""


class Stress(_Model):
    """The stress pods of resource-exhaustion drills: one per node, Guaranteed, requesting and burning a share
    of what the node's allocatable leaves free."""

    cpu: Share = 1.0
    """Share of each node's free allocatable CPU a stress pod requests and burns."""
    memory: Share = 0.8
    """Share of each node's free allocatable memory a stress pod requests and holds (filled to 90%)."""
    image: Text = STRESS_IMAGE
    """An image whose entrypoint is stress-ng: it gets --cpu, --cpu-load, --vm, --vm-bytes, --vm-populate and
    --vm-hang."""


class Runner(_Model):
    """Where the harness runs: `fleetdrill doctor` warns when a selected drill would cut it off (loses its
    cluster, or partitions its region)."""

    cluster: Name | None = None
    """The cluster of the fleet it runs in (e.g. its CronJob's); its region is then that cluster's."""
    region: Text | None = None
    """The region it runs in, for a machine or a cluster outside the fleet (with cluster: that cluster's)."""

    @model_validator(mode="after")
    def _somewhere(self) -> "Runner":
        if self.cluster is None and self.region is None:
            raise _Invalid("at least one of cluster, region", {})
        return self


class StageObjectives(_Model):
    """A stage's own bounds for the gate's probes, in place of the app's (a dev stage may hold less)."""

    availability: Availability | None = None
    """Fewest successful probes allowed over the soak, as a fraction."""
    latency: PositiveDuration | None = None
    """Bound of the probes' p99 latency over the soak."""


class Stage(_Model):
    """One stage of a progressive rollout: the clusters a new version reaches together."""

    name: Name
    """The stage's name (`fleetdrill gate --stage NAME`), e.g. dev, staging, canary, prod."""
    clusters: Annotated[tuple[Name, ...], Field(min_length=1)]
    """The clusters the new version reaches in this stage (each in one stage only)."""
    objectives: StageObjectives = StageObjectives()
    """Bounds for this stage's probes in place of the app's objectives (unset: the app's)."""


class Rollout(_Model):
    """The stages a new version rolls through, in order, and how long the gate soaks it in each."""

    stages: Annotated[tuple[Stage, ...], Field(min_length=1)]
    """The stages in rollout order; a stage's configuration parity is judged against the one before it."""
    soak: PositiveDuration = 60.0
    """How long the gate probes a stage's clusters (and judges the app's PromQL objectives over)."""


class Fleet(_Model):
    """A fleet of Kubernetes clusters and the apps drills run against (fleet.yaml)."""

    name: Name
    """Fleet name."""
    kubeconfig: Kubeconfig = Field(Path("~/.kube/config"), validate_default=True)
    """Default kubeconfig file (relative to the fleet file, "~" expanded)."""
    clusters: Annotated[tuple[Cluster, ...], AfterValidator(_some), Field(json_schema_extra={"minItems": 1})]
    """The clusters of the fleet."""
    absent_roles: tuple[Literal["passive", "standby"], ...] = ()
    """Cluster roles the fleet has no cluster of, by design: e.g. [standby] when apps fail over to a passive
    cluster and are never restored into another. The gate drills (DR readiness, configuration parity) check
    every passive and standby cluster; a role without a cluster is an error unless it is listed here."""
    apps: tuple[App, ...] = ()
    """The apps drills probe."""
    velero: Velero = Velero()
    """Velero settings."""
    infrastructure: Infrastructure = Infrastructure()
    """Provider for infrastructure faults."""
    safety: Safety = Safety()
    """Guards for destructive drills."""
    stress: Stress = Stress()
    """What resource-exhaustion drills put on the nodes."""
    runner: Runner | None = None
    """Where the harness runs (unset: found when it runs in a pod of a fleet cluster, else unknown)."""
    prometheus: Prometheus | None = None
    """A fleet-wide Prometheus (global, federated, Thanos) for objectives of scope fleet and aborts."""
    rollout: Rollout | None = None
    """The progressive rollout's stages, for `fleetdrill gate --stage NAME`."""
    local: dict[str, Any] = {}
    """Written by the embedded local fleet only: its settings and timings."""

    @model_validator(mode="after")
    def _cross_check(self) -> "Fleet":
        """Rules that span fields: unique names, known clusters and contexts."""
        _unique("clusters", [c.name for c in self.clusters], "name")
        _unique("clusters", [(self.kubeconfig_for(c), self.context_for(c)) for c in self.clusters], "context")
        _unique("apps", [a.name for a in self.apps], "name")
        names = [c.name for c in self.clusters]
        for i, app in enumerate(self.apps):
            for key in app.endpoints:
                if key not in names:
                    raise _Invalid(f"a cluster name ({', '.join(names)})", key, ("apps", i, "endpoints", key))
            databases = app.sentinels.clusters if isinstance(app.sentinels, PostgresqlSentinels) else {}
            for key in databases:
                if key not in names:
                    where = ("apps", i, "sentinels", "clusters", key)
                    raise _Invalid(f"a cluster name ({', '.join(names)})", key, where)
            write = app.sentinels.write if isinstance(app.sentinels, HttpSentinels) else None
            relative = write is not None and write.path.startswith("/")
            if relative and not app.global_endpoint:  # sentinel writes go through it
                what = "an absolute URL (the app has no global_endpoint for a path)"
                raise _Invalid(what, write.path, ("apps", i, "sentinels", "write", "path"))
        if self.safety.lease_cluster not in (None, *names):
            what = f"a cluster name ({', '.join(names)})"
            raise _Invalid(what, self.safety.lease_cluster, ("safety", "lease_cluster"))
        self._runner_fits(names)
        self._stages_fit(names)
        self._prometheus_known()
        contexts = [self.context_for(c) for c in self.clusters]
        for i, context in enumerate(self.safety.allowlist):
            if context not in contexts:
                raise _Invalid(
                    f"a context of a cluster ({', '.join(contexts)})", context, ("safety", "allowlist", i)
                )
        return self

    def _prometheus_known(self) -> None:
        """Every PromQL objective and metric abort has a Prometheus to ask."""
        fleetwide = self.prometheus is not None
        for i, app in enumerate(self.apps):
            for j, objective in enumerate(app.objectives.promql):
                where = ("apps", i, "objectives", "promql", j)
                if objective.scope == "fleet" or objective.cluster_label is not None:
                    if not fleetwide:
                        what = "scope fleet" if objective.scope == "fleet" else "cluster_label"
                        raise _Invalid(
                            f"a top-level prometheus ({what} asks the fleet-wide one)", None, where
                        )
                    continue
                for cluster in promql_clusters(self, app):
                    if cluster.prometheus is not None:
                        continue
                    if not fleetwide or CLUSTER_PLACEHOLDER not in objective.query:
                        expected = (
                            f"clusters[{cluster.name}].prometheus, or a top-level prometheus and "
                            "{cluster} in the query"
                        )
                        raise _Invalid(expected, objective.query, (*where, "query"))
        abort = self.safety.abort
        asks = [(("promql", i), q.prometheus) for i, q in enumerate(abort.promql)] if abort else []
        asks += [(("alerts", i), a.prometheus) for i, a in enumerate(abort.alerts)] if abort else []
        for loc, name in asks:
            where = ("safety", "abort", *loc, "prometheus")
            if name is None and not fleetwide:
                raise _Invalid("a cluster name, or a top-level prometheus", None, where)
            with_one = [c.name for c in self.clusters if c.prometheus is not None]
            if name is not None and name not in with_one:
                raise _Invalid(
                    f"a cluster with a prometheus ({', '.join(with_one) or 'none has one'})", name, where
                )

    def _stages_fit(self, names: list[str]) -> None:
        """Rollout stages have unique names and name clusters of the fleet, each in one stage only."""
        if self.rollout is None:
            return
        _unique("rollout.stages", [s.name for s in self.rollout.stages], "name")
        staged: dict[str, str] = {}
        for i, stage in enumerate(self.rollout.stages):
            for j, name in enumerate(stage.clusters):
                where = ("rollout", "stages", i, "clusters", j)
                if name not in names:
                    raise _Invalid(f"a cluster name ({', '.join(names)})", name, where)
                if name in staged:
                    raise _Invalid(f"a cluster in no other stage (stage {staged[name]} has it)", name, where)
                staged[name] = stage.name

    def stage(self, name: str) -> tuple[Stage, Stage | None]:
        """The rollout stage called `name` and the one before it (None for the first)."""
        stages = self.rollout.stages if self.rollout is not None else ()
        for i, stage in enumerate(stages):
            if stage.name == name:
                return stage, stages[i - 1] if i else None
        known = ", ".join(s.name for s in stages) or "none: the fleet file has no rollout.stages"
        raise ConfigError(
            f"fleet {self.name!r}: rollout.stages: expected a stage name ({known}), got {name!r}"
        )

    def _runner_fits(self, names: list[str]) -> None:
        """runner.cluster is a cluster of the fleet; with runner.region, that cluster's region."""
        runner = self.runner
        if runner is None or runner.cluster is None:
            return
        if runner.cluster not in names:
            raise _Invalid(f"a cluster name ({', '.join(names)})", runner.cluster, ("runner", "cluster"))
        region = self.cluster(runner.cluster).region
        if runner.region not in (None, region):
            expected = f"the region of cluster {runner.cluster} ({region})"
            raise _Invalid(expected, runner.region, ("runner", "region"))

    @model_validator(mode="after")
    def _cloud_ids_known(self) -> "Fleet":
        """A step, or an app's failover, that uses {cloud[KEY]} has KEY in every cluster's cloud ids."""
        steps = _cloud_keys(self.infrastructure.typed_settings())
        uses = [(f"infrastructure.settings.{step}", key) for step, key in steps]
        for n, app in enumerate(self.apps):
            uses += [
                (f"apps[{n}].failover", key) for key in CLOUD_IN_TEXT.findall(app.failover.model_dump_json())
            ]
        for where, key in uses:
            for i, cluster in enumerate(self.clusters):
                if key not in cluster.cloud:
                    expected = f"a key {key} ({where} uses {{cloud[{key}]}})"
                    raise _Invalid(expected, dict(cluster.cloud), ("clusters", i, "cloud"))
        return self

    @model_validator(mode="after")
    def _absent_roles_are_absent(self) -> "Fleet":
        """A role listed as absent by design has no cluster."""
        for i, role in enumerate(self.absent_roles):
            for cluster in self.clusters:
                if cluster.role == role:
                    expected = f"a role no cluster has ({cluster.name} is {role})"
                    raise _Invalid(expected, role, ("absent_roles", i))
        return self

    def cluster(self, name: str) -> Cluster:
        """The cluster called `name`."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters)
        raise ConfigError(f"fleet {self.name!r}: expected a cluster name ({known}), got {name!r}")

    def app(self, name: str) -> App:
        """The app called `name`."""
        for app in self.apps:
            if app.name == name:
                return app
        known = ", ".join(a.name for a in self.apps) or "none defined"
        raise ConfigError(f"fleet {self.name!r}: expected an app name ({known}), got {name!r}")

    def segmented(self) -> bool:
        """Some cluster is in an environment other than the default, dev: the fleet separates environments
        (a fleet file that sets none, or only dev, does not)."""
        return any(cluster.environment != "dev" for cluster in self.clusters)

    def primary(self) -> Cluster:
        """The active cluster, when exactly one cluster is active."""
        active = [c for c in self.clusters if c.role == "active"]
        if len(active) != 1:
            got = ", ".join(c.name for c in active) or "none"
            raise ConfigError(f"fleet {self.name!r}: expected exactly one active cluster, got {got}")
        return active[0]

    def kubeconfig_for(self, cluster: str | Cluster) -> Path:
        """The kubeconfig file of `cluster` (a name or a Cluster)."""
        found = self.cluster(cluster) if isinstance(cluster, str) else cluster
        return found.kubeconfig or self.kubeconfig

    def context_for(self, cluster: str | Cluster) -> str:
        """The kubeconfig context of `cluster` (a name or a Cluster)."""
        found = self.cluster(cluster) if isinstance(cluster, str) else cluster
        return found.context or found.name


def promql_clusters(fleet: Fleet, app: App) -> list[Cluster]:
    """The clusters a PromQL objective of scope cluster is judged in: those the app has endpoints in, else
    every cluster."""
    return [c for c in fleet.clusters if c.name in app.endpoints] or list(fleet.clusters)


def _cloud_keys(settings: BaseModel | None) -> list[tuple[str, str]]:
    """(field, KEY) for every {cloud[KEY]} in a provider's steps (and a chaostoolkit configuration)."""
    if settings is None:
        return []
    filled = [name for name in type(settings).model_fields if name in STEPS or name == "configuration"]
    texts = {name: json.dumps(getattr(settings, name), default=str) for name in filled}
    return [(name, key) for name, text in texts.items() for key in CLOUD_IN_TEXT.findall(text)]


def _unique(field: str, keys: list[Any], part: str) -> None:
    """Raise _Invalid at the first of `keys` (one per entry of `field`) that an earlier entry has already."""
    for i, key in enumerate(keys):
        if key in keys[:i]:
            got = key[-1] if isinstance(key, tuple) else key
            raise _Invalid(f"a {part} not used by {field}[{keys.index(key)}]", got, (field, i, part))


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (plain YAML lets the last one win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; any mistake in it raises ConfigError with one line naming it."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{path}: cannot read fleet file: {reason}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        said = [getattr(exc, "context", None), getattr(exc, "problem", None)]
        problem = (
            " ".join(", ".join(filter(None, said)).split()) or "unreadable"
        )  # one line, whatever YAML says
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fleet settings at the top level, got {_show(data)}")
    try:
        return Fleet.model_validate(data, context={"base": path.absolute().parent})
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_url=False)]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError(f"{path}: {'; '.join(problems[:3])}{more}") from None


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "path_type": "a path",
    "string_too_short": "a non-empty string",
    "greater_than_equal": "an integer >= {ge}",
    "less_than_equal": "an integer <= {le}",
}


def _describe(error: Any) -> str:
    """One pydantic error as `field.path[0]: expected <what>, got <value>`."""
    loc, text = _located(error, Fleet)
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{where}: {text}"


def _located(error: Any, root: type[BaseModel]) -> tuple[tuple[str | int, ...], str]:
    """Where one pydantic error is (below `root`) and what it says: `expected <what>, got <value>`."""
    loc, kind, ctx = _untagged(error["loc"], root), error["type"], error.get("ctx", {})
    if isinstance(ctx.get("error"), _Invalid):
        loc, text = loc + ctx["error"].loc, str(ctx["error"])
    elif kind == "missing":
        text = "missing required field"
    elif kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(error["loc"][:-1], root), n=1)
        text = "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    else:
        got = error["input"]
        if kind == "union_tag_invalid":  # a member of a discriminated union, chosen by its tag field
            loc += (ctx["discriminator"].strip("'"),)
            expected, got = "one of " + ctx["expected_tags"].replace("'", ""), ctx["tag"]
        elif kind == "literal_error":
            expected = "one of " + ctx["expected"].replace("'", "").replace(" or ", ", ")
        elif kind == "string_pattern_mismatch":
            expected = _PATTERNS.get(ctx["pattern"], f"a string matching {ctx['pattern']}")
        elif kind in _EXPECTED:
            expected = _EXPECTED[kind].format(**ctx)
        else:
            expected = f"a valid value ({error['msg']})"
        text = f"expected {expected}, got {_show(got)}"
    return loc, text


def _untagged(loc: tuple[str | int, ...], root: type[BaseModel]) -> tuple[str | int, ...]:
    """`loc` without the tags pydantic puts in it after a discriminated union (sentinels.http.write)."""
    kept: list[str | int] = []
    annotation: Any = root
    for part in loc:
        model = _model_in(annotation)
        if isinstance(part, str) and model is not None and part not in model.model_fields:
            member = _tagged(annotation, part)
            if member is not None:
                annotation = member
                continue
        if isinstance(part, str) and model is not None and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        kept.append(part)
    return tuple(kept)


def _tagged(annotation: Any, tag: str) -> Any:
    """The model in `annotation` (a union) whose literal field has the value `tag`, or None."""
    for member in get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            literals = [get_args(f.annotation) for f in member.model_fields.values()]
            if any(
                tag in values for values in literals if values and all(isinstance(v, str) for v in values)
            ):
                return member
        elif (found := _tagged(member, tag)) is not None:
            return found
    return None


def _fields_at(loc: tuple[str | int, ...], root: type[BaseModel]) -> list[str]:
    """The field names (aliases) of the model found at `loc` (as pydantic gives it, with the tags of
    discriminated unions) below `root`."""
    annotation: Any = root
    for part in loc:
        model = _model_in(annotation)
        if isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        elif isinstance(part, str):
            annotation = _tagged(annotation, part)
    model = _model_in(annotation)
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m), None)


def dump_fleet(fleet: Fleet) -> str:
    """The fleet as fleet-file YAML; load_fleet reads it back equal."""
    data = fleet.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def fleet_json_schema() -> dict[str, Any]:
    """JSON schema of the fleet file, for editors; apps[].failover as the registered strategies make it."""
    schema = Fleet.model_json_schema(by_alias=True)
    failover = failover_model().model_json_schema(by_alias=True)
    schema["$defs"] |= failover.pop("$defs", {}) | {"Failover": failover}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":
    from harness import config  # this module as the strategies import it, not as __main__

    print(json.dumps(config.fleet_json_schema(), indent=2))
