"""Strict JSON for the metadata files of local layouts (index.json, manifest.json, bundles).

Duplicate keys are refused (two parsers must never disagree about what a file says), and so
are documents too deep or too large to be honest. [pure]
"""

from __future__ import annotations

import json
from typing import Any

from mirrord.errors import LocalStorageError


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def load_json(raw: bytes, what: str) -> Any:
    """Parse `raw`; LocalStorageError naming `what` when it is not strict, valid JSON."""
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise LocalStorageError(f"{what}: invalid JSON ({str(exc)[:120]})") from None


def dump_json(data: Any) -> bytes:
    """Compact, stable JSON bytes (sorted keys) for files mirrord writes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def string_map(value: Any, what: str) -> dict[str, str]:
    """A JSON object of strings (annotations); LocalStorageError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LocalStorageError(f"{what}: expected an object of strings")
    return dict(value)
