"""A Prometheus HTTP API client: instant and range queries and firing alerts, each request with a deadline,
authenticated as the fleet file says (bearer token from a variable or a command, basic auth, a CA file).

No secret ever leaves this module in a message or a repr: errors name the server, the path and the
status; a token command's failure names the command's program and exit status only.
"""

from __future__ import annotations

import base64
import json
import math
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harness.config import Fleet, Prometheus
from harness.errors import FleetDrillError
from harness.report.redact import redact
from harness.units import parse_duration

FLEET = "fleet"
"""The fleet-wide Prometheus (the fleet file's top-level `prometheus`), where a cluster name would go."""
ERROR_BODY_CHARS = 200


class PrometheusError(FleetDrillError):
    """A Prometheus request failed; the message names the server and why, never a credential. `status`:
    the HTTP status the server answered with, if it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Series:
    """One series a query returned: its labels and its (unix time, value) points; NaN values are left out
    (0/0 of a ratio: no value at that moment)."""

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]

    def describe(self) -> str:
        """`{a="b", c="d"}`, or `{}` for a series without labels."""
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())) + "}"


@dataclass(frozen=True)
class Alert:
    """An alert as /api/v1/alerts lists it."""

    name: str
    state: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Target:
    """An active scrape target as /api/v1/targets lists it: its labels, health ("up", "down" or "unknown"
    before its first scrape), when its last scrape began (unix time; its samples are in by then), the URL
    it scrapes and how often (seconds; None when not given in s, m, h or ms)."""

    labels: dict[str, str]
    health: str
    last_scrape: float
    scrape_url: str = ""
    interval: float | None = None

    def describe(self) -> str:
        """`{instance="b", job="a"}`."""
        return Series(self.labels, ()).describe()


class _Token:
    """The bearer token a token command prints, run again after `refresh_s` or when the server refused
    the last one. Its value is never in a repr."""

    def __init__(self, argv: tuple[str, ...], refresh_s: float, timeout_s: float) -> None:
        self._argv, self._refresh, self._timeout = argv, refresh_s, timeout_s
        self._value: str | None = None
        self._taken = 0.0
        self.runs = 0
        """How often the command ran."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_Token(command {self._argv[0]!r}, value withheld)"

    def get(self, *, renew: bool = False) -> str:
        with self._lock:
            stale = time.monotonic() - self._taken >= self._refresh
            if renew or stale or self._value is None:
                self._value, self._taken = self._run(), time.monotonic()
                self.runs += 1
            return self._value

    def _run(self) -> str:
        program = self._argv[0]
        try:
            done = subprocess.run(
                list(self._argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self._timeout,
            )
        except FileNotFoundError:
            raise PrometheusError(f"token_command {program!r} is not installed on this machine") from None
        except subprocess.TimeoutExpired:
            raise PrometheusError(
                f"token_command {program!r} gave no token within {self._timeout:g} s"
            ) from None
        token = done.stdout.strip()
        if done.returncode != 0:  # its error output may quote the token or a key: not shown
            raise PrometheusError(
                f"token_command {program!r} exited {done.returncode} (its output not shown)"
            )
        if not token or len(token.split()) != 1:
            raise PrometheusError(f"token_command {program!r} printed no token (one word on stdout)")
        return token


class PrometheusClient:
    """One Prometheus server's HTTP API; `where` names it in messages (a cluster, or "fleet")."""

    def __init__(self, settings: Prometheus, where: str) -> None:
        self.settings, self.where = settings, where
        self.url = settings.url.rstrip("/")
        self._token = (
            _Token(settings.token_command, settings.token_refresh, settings.timeout)
            if settings.token_command
            else None
        )
        self._tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"PrometheusClient({self.where}: {self.url}, auth {self.auth_kind()})"

    def auth_kind(self) -> str:
        """How requests authenticate, in words (never the credential)."""
        s = self.settings
        if s.bearer_token_env:
            return f"bearer token from ${s.bearer_token_env}"
        if s.token_command:
            return f"bearer token from command {s.token_command[0]!r}"
        if s.username:
            return f"basic auth as {s.username!r}, password from ${s.password_env}"
        return "none"

    def query(self, promql: str, at: float | None = None) -> list[Series]:
        """An instant query (at unix time `at`, default now): one point per series."""
        form = {"query": promql, "timeout": f"{self.settings.timeout:g}s"}
        form |= {"time": f"{at:.3f}"} if at is not None else {}
        data = self._call("/api/v1/query", form)
        return _series(data, self.where)

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        """A range query from `start` to `end` (unix times) every `step` seconds."""
        form = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        form["timeout"] = f"{self.settings.timeout:g}s"  # the server gives up too
        return _series(self._call("/api/v1/query_range", form), self.where)

    def targets(self) -> list[Target]:
        """Every target the server scrapes now (not the ones service discovery dropped)."""
        data = self._call("/api/v1/targets", {"state": "active"}, method="GET")
        return [
            Target(
                dict(t.get("labels") or {}),
                str(t.get("health")),
                _unix(str(t.get("lastScrape"))),
                str(t.get("scrapeUrl") or ""),
                _seconds(t.get("scrapeInterval")),
            )
            for t in data.get("activeTargets", [])
        ]

    def alerts(self) -> list[Alert]:
        """Every alert the server's rules hold now (pending or firing)."""
        data = self._call("/api/v1/alerts", None)
        return [
            Alert(str(a.get("labels", {}).get("alertname", "")), str(a.get("state", "")), a.get("labels", {}))
            for a in data.get("alerts", [])
        ]

    def alert_rules(self) -> list[str]:
        """The names of the alerting rules the server evaluates."""
        data = self._call("/api/v1/rules", {"type": "alert"}, method="GET")
        return [str(r.get("name")) for g in data.get("groups", []) for r in g.get("rules", [])]

    def _call(self, path: str, form: dict[str, str] | None, method: str | None = None) -> Any:
        """The `data` of an API answer; PrometheusError naming the server for anything else. A token from a
        command that the server refuses (401, 403) is renewed once."""
        try:
            return self._request(path, form, method, renew=False)
        except _Refused as refused:
            if self._token is None:
                raise PrometheusError(refused.message) from None
        try:
            return self._request(path, form, method, renew=True)
        except _Refused as refused:
            raise PrometheusError(f"{refused.message}, with a token just renewed") from None

    def _request(self, path: str, form: dict[str, str] | None, method: str | None, renew: bool) -> Any:
        body = None
        url = self.url + path
        if form is not None and method == "GET":
            url += "?" + urllib.parse.urlencode(form)
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(url, data=body, method=method or ("POST" if body else "GET"))
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        header = self._authorization(renew)
        if header is not None:
            request.add_header("Authorization", header)
        said = f"Prometheus {self.where} ({self.url}) {path}"
        try:
            with self._opener().open(request, timeout=self.settings.timeout) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as error:
            text = _error_text(error)
            if error.code in (401, 403):
                raise _Refused(f"{said}: HTTP {error.code} ({text}): check {self.auth_kind()}") from None
            raise PrometheusError(f"{said}: HTTP {error.code}: {text}", error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise PrometheusError(f"{said}: no answer within {self.settings.timeout:g} s") from None
            raise PrometheusError(f"{said}: {reason}") from None
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise PrometheusError(f"{said}: the answer is not JSON (is this a Prometheus API?)") from None
        if not isinstance(decoded, dict) or decoded.get("status") != "success":
            raise PrometheusError(f"{said}: {decoded.get('error') if isinstance(decoded, dict) else decoded}")
        return decoded.get("data", {})

    def _opener(self) -> urllib.request.OpenerDirector:
        """An opener with the TLS context that follows no redirect (it would carry the credential to
        wherever the redirect points)."""
        return urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._context()), _NoRedirect()
        )

    def _context(self) -> ssl.SSLContext:
        """The TLS context: the system's CAs, or the ca_file's."""
        if self._tls is None:
            ca = self.settings.ca_file
            try:
                self._tls = ssl.create_default_context(cafile=str(ca) if ca else None)
            except (OSError, ssl.SSLError) as error:
                raise PrometheusError(f"Prometheus {self.where}: ca_file {ca}: {error}") from None
        return self._tls

    def _authorization(self, renew: bool) -> str | None:
        s = self.settings
        if s.bearer_token_env:
            return f"Bearer {_environment(s.bearer_token_env, 'bearer_token_env', self.where)}"
        if self._token is not None:
            return f"Bearer {self._token.get(renew=renew)}"
        if s.username and s.password_env:
            password = _environment(s.password_env, "password_env", self.where)
            return "Basic " + base64.b64encode(f"{s.username}:{password}".encode()).decode()
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error naming where it points: set the fleet file's url to that."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirected to {newurl}: use that as url", headers, fp
        )


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _environment(name: str, field: str, where: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise PrometheusError(f"Prometheus {where}: {field} names ${name}, which is not set")
    return value


def _error_text(error: urllib.error.HTTPError) -> str:
    """The API's `error` field, or the start of the body (a proxy's page), on one line."""
    if 300 <= error.code < 400:
        return str(error.reason)
    try:
        raw = error.read().decode(errors="replace")
    except OSError:
        return str(error.reason or "")
    try:
        return redact(str(json.loads(raw).get("error") or error.reason))
    except (ValueError, AttributeError):
        return redact(" ".join(raw.split())[:ERROR_BODY_CHARS]) or str(error.reason)


def _unix(rfc3339: str) -> float:
    """A lastScrape as unix time; 0 for never (Go's zero time) or anything unparsable."""
    try:
        return max(datetime.fromisoformat(rfc3339).timestamp(), 0.0)
    except ValueError:
        return 0.0


def _seconds(duration: object) -> float | None:
    try:
        return parse_duration(duration) or None
    except ValueError:
        return None


def _series(data: Any, where: str) -> list[Series]:
    """The series of a query's `data` (vector, matrix or scalar)."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        result = [{"metric": {}, "value": result}]
    elif kind not in ("vector", "matrix"):
        raise PrometheusError(f"Prometheus {where}: a query answered with result type {kind!r}")
    series = []
    for item in result or []:
        raw = item.get("values") or ([item["value"]] if "value" in item else [])
        points = tuple((float(t), float(v)) for t, v in raw if not math.isnan(float(v)))
        series.append(Series(dict(item.get("metric") or {}), points))
    return series


class Prometheuses:
    """The fleet's Prometheus clients, made when first asked for and kept for the run (a token command's
    token with them)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._clients: dict[str, PrometheusClient] = {}

    def configured(self) -> list[str]:
        """FLEET when there is a fleet-wide Prometheus, and every cluster with its own."""
        names = [FLEET] if self.fleet.prometheus is not None else []
        return names + [c.name for c in self.fleet.clusters if c.prometheus is not None]

    def get(self, where: str | None) -> PrometheusClient:
        """The client of a cluster's Prometheus, or of the fleet-wide one (None or FLEET)."""
        key = where or FLEET
        if key not in self._clients:
            settings = self.fleet.prometheus if key == FLEET else self.fleet.cluster(key).prometheus
            if settings is None:
                raise PrometheusError(f"{key}: no prometheus in the fleet file of fleet {self.fleet.name}")
            self._clients[key] = PrometheusClient(settings, key)
        return self._clients[key]
