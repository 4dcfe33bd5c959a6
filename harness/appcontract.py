"""The app contract: what the harness knows of an app, all of it from the app's entry in the fleet file
(`apps[]`, README "The app contract"), never from our sample app. Its parts and where each acts:

- health: `health_path`, probed on the global endpoint and each cluster's, and `accepted_statuses`
  (default 2xx): a probe succeeds only on those (probe_options; traffic.Prober judges);
- identity: `served_by`, a header or a JSON field naming the cluster that answered (probe_options,
  identity_header); declared, an answer without it is not the app's;
- promotion: `failover` (strategy `promote`, with its promote step none, HTTP or command, or `command`),
  in harness.strategies;
- data: `sentinels`, the adapter that writes and reads back sentinel records (http, command, postgresql),
  chosen by harness.sentinels.store_for;
- objectives: `objectives` (rto, rpo, availability, latency, promql), judged in harness.drill.
"""

from __future__ import annotations

from typing import Any

from harness.config import App
from harness.errors import ConfigError
from harness.traffic import status_codes


def probe_options(app: App, proxied: bool = False) -> dict[str, Any]:
    """The Prober options of the app's contract in the fleet file: the statuses it accepts and its identity.

    proxied (through the API server's service proxy, whose own 404, 403 or 503 say no such service,
    forbidden, no endpoint yet): an app accepting a 4xx must declare served_by, else the proxy's answer
    would count as the app's; ConfigError then."""
    identity = app.served_by
    accepts_4xx = any(code >= 400 for spec in app.accepted_statuses for code in status_codes(spec))
    if proxied and accepts_4xx and identity is None:
        raise ConfigError(
            f"app {app.name!r} accepts 4xx answers and declares no served_by: through the API server's "
            "proxy, the proxy's own 404 or 403 could not be told from the app's; set served_by"
        )
    return {
        "accepted_statuses": app.accepted_statuses,
        "identity_header": identity.header if identity else None,
        "identity_field": identity.json_field if identity else None,
    }


def identity_header(app: App) -> str | None:
    """The header naming the cluster that answered, when the app declares one."""
    return app.served_by.header if app.served_by is not None else None
