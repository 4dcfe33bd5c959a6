"""Secrets never reach a report: token-looking text is replaced before anything is written or shown.

Records name clusters, contexts and endpoints, never credentials; this is the second line of defence for
what slips in anyway (a failure message quoting a kubeconfig, an environment dump, a bearer header).
"""

import re
from typing import Any

MASK = "[REDACTED]"

_PATTERNS = (
    # PEM private keys and certificates, whole blocks.
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----[\s\S]*?-----END [A-Z0-9 ]+-----"),
    # JSON Web Tokens (Kubernetes service-account tokens among them).
    re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*"),
    # Authorization headers.
    re.compile(r"(?i)\b(?:bearer|basic)\s+[\w.~+/=-]{8,}"),
    # AWS access key ids, Kubernetes bootstrap tokens.
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),
    # Long base64 runs (kubeconfig *-data fields, keys); ids and hashes are shorter or hex.
    re.compile(
        r"(?<![\w+/])(?=[A-Za-z0-9+/]*[A-Z])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*\d)[A-Za-z0-9+/]{48,}={0,2}"
    ),
)
# key: value and key=value where the key names a secret; the key stays, the value goes.
_KEYED = re.compile(
    r"(?i)(\b[\w-]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"client-key-data|credentials?)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]+)"
)
_SECRET_KEY = re.compile(
    r"(?i)^[\w-]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)$"
)


def redact(text: str) -> str:
    """text with every token-looking part replaced by [REDACTED]."""
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return _KEYED.sub(lambda match: match.group(1) + MASK, text)


def redact_data(data: Any) -> Any:
    """A copy of JSON-like data with secrets masked: in strings, and whole values under secret-named keys."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {
            key: MASK if isinstance(key, str) and _SECRET_KEY.search(key) and value else redact_data(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_data(value) for value in data]
    return data
