"""The part of Go's text/template that `skopeo inspect --format` scripts use.  [pure]

skopeo 1.9 hands the template to Go's text/template with no functions of its own. This reads
`{{.Digest}}`, `{{.Labels.maintainer}}`, `{{index .Labels "org.opencontainers.image.version"}}`,
`{{len .Layers}}` and `{{-`/`-}}` trimming; values print as Go prints them (`[a b]` for a list,
`map[k:v]` for a map, `<no value>` for a missing key). Anything else (`range`, `if`, pipes,
variables) is refused with a message naming it, rather than printed wrong.
"""

from __future__ import annotations

import datetime
import re
import shlex
from collections.abc import Callable
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_PATH = re.compile(r"\.|(?:\.[A-Za-z_][A-Za-z0-9_.-]*)")
NO_VALUE = "<no value>"


class TemplateError(ValueError):
    """A template this subset does not read; the message names the part."""


def render(template: str, data: dict[str, Any]) -> str:
    """`template` with every action replaced by its value in `data`."""
    out: list[str] = []
    position = 0
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        out.append(text.rstrip() if match.group(1) else text)
        out.append(_action(match.group(2).strip(), data))
        position = match.end()
        if match.group(3):
            rest = template[position:]
            position += len(rest) - len(rest.lstrip())
    out.append(template[position:])
    if "{{" in out[-1]:
        raise TemplateError(f"unclosed action in {template[:80]!r}")
    return "".join(out)


def _action(action: str, data: dict[str, Any]) -> str:
    try:
        name, *args = shlex.split(action)
    except ValueError:
        raise TemplateError(f"cannot read {{{{{action}}}}}") from None
    if _PATH.fullmatch(name) and not args:
        return go_string(_lookup(data, name))
    function = _FUNCTIONS.get(name)
    if function is None or not args or not _PATH.fullmatch(args[0]):
        raise TemplateError(
            f"{{{{{action}}}}} is not supported: use .Field, .Map.key, index or len"
        )
    return function(_lookup(data, args[0]), args[1:])


def _lookup(data: dict[str, Any], path: str) -> Any:
    """The value at `.A.B`: A is a field of the output (unknown: an error, as in Go), B a key
    of a map (absent: `<no value>`)."""
    value: Any = data
    for depth, part in enumerate(path.split(".")[1:] if path != "." else ()):
        if not isinstance(value, dict):
            raise TemplateError(f"{path}: {part} is not a field of a {go_type(value)}")
        if part not in value:
            if depth == 0:
                raise TemplateError(f"{path}: no field {part!r} (fields: {', '.join(data)})")
            return _Missing()
        value = value[part]
    return value


class _Missing:
    """A map key that is not there: Go prints `<no value>`."""


def _index(value: Any, args: list[str]) -> str:
    if len(args) != 1:
        raise TemplateError("index takes a map and one key")
    if not isinstance(value, dict | None):
        raise TemplateError(f"index of a {go_type(value)}")
    found = (value or {}).get(args[0])
    return "" if found is None else go_string(found)


def _len(value: Any, args: list[str]) -> str:
    if args or not isinstance(value, list | dict | str | None):
        raise TemplateError("len takes one list, map or string")
    return str(len(value or ()))


_FUNCTIONS: dict[str, Callable[[Any, list[str]], str]] = {"index": _index, "len": _len}


def go_string(value: Any) -> str:
    """`value` as Go's fmt prints it inside a template."""
    if isinstance(value, _Missing):
        return NO_VALUE
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def go_type(value: Any) -> str:
    names: dict[type, str] = {list: "list", dict: "map", str: "string"}
    kind: type = type(value)
    return names.get(kind, kind.__name__)


def go_time(text: str | None) -> str | None:
    """An RFC 3339 time (an image config's `created`) as Go prints a time.Time:
    `2024-05-01 12:00:00 +0000 UTC`; None (Go's nil pointer) or unreadable text stays as is."""
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    fraction = f".{when.microsecond:06d}".rstrip("0") if when.microsecond else ""
    offset = when.strftime("%z") or "+0000"
    zone = "UTC" if offset == "+0000" else offset
    return f"{when:%Y-%m-%d %H:%M:%S}{fraction} {offset} {zone}"
