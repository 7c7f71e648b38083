"""Collecting configuration problems as `FILE:LINE: key.path: message` lines, raised together.

Messages never carry the offending value unless the caller put it there on purpose (a repo name,
a regex): a misplaced password must not end up in a log.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, RootModel, ValidationError

from mirrord.config.invalid import Invalid as Invalid  # re-exported
from mirrord.config.yamlsafe import Document, KeyPath, UnreadableDocument
from mirrord.errors import ConfigError

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: KeyPath) -> str:
    """`sources[0].inline."quay.io".images."coreos/etcd"`: dots only ever separate keys."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _PLAIN_KEY.fullmatch(part) else f'"{part}"'
            text += f".{key}" if text else key
    return text


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem, where it is."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class Problems:
    """Every problem found while loading, in file and line order."""

    def __init__(self) -> None:
        self._items: list[Problem] = []
        self._files: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, doc: Document, path: KeyPath, message: str, line: int | None = None) -> None:
        """Record `message` about `path` of `doc` (at `line`, or the path's own line)."""
        self._files.setdefault(doc.name, len(self._files))
        line = doc.line(path) if line is None else line
        self._items.append(Problem(doc.name, line, format_path(path), message))

    def add_unreadable(self, error: UnreadableDocument) -> None:
        """A file that could not be read or parsed: one problem, the others still checked."""
        self._files.setdefault(error.name, len(self._files))
        self._items.append(Problem(error.name, error.line, "", error.detail))

    def add_read_problems(self, doc: Document) -> None:
        for problem in doc.problems:
            self.add(doc, problem.path, problem.message, problem.line)

    def add_validation(
        self, doc: Document, error: ValidationError, model: type[BaseModel], prefix: KeyPath = ()
    ) -> None:
        """One problem per pydantic error; unknown keys get a "did you mean" suggestion."""
        for item in error.errors(include_url=False, include_input=False):
            loc = tuple(item["loc"])
            self.add(doc, (*prefix, *loc), _message(item, model, loc))

    def raise_if_any(self, what: str) -> None:
        """Raise one ConfigError holding every problem, sorted by file and line."""
        if not self._items:
            return
        items = sorted(self._items, key=lambda p: (self._files[p.file], p.line))
        count = len(items)
        summary = f"{what}: {count} problem{'s' if count > 1 else ''}"
        raise ConfigError(summary, tuple(str(p) for p in items))


def _message(item: Any, model: type[BaseModel], loc: KeyPath) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), keys_at(model, loc[:-1]))
    if kind == "missing":
        return "this key is required"
    return str(item["msg"]).removeprefix("Value error, ")


def unknown_key(key: str, valid: list[str]) -> str:
    """`unknown key 'imagse' (did you mean 'images'?)`."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if not close and valid:
        hint = f" (expected one of: {', '.join(sorted(valid))})"
    return f"unknown key {key!r}{hint}"


def keys_at(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys a model accepts at `loc` (empty when `loc` is not a model)."""
    annotation: Any = model
    for part in loc:
        annotation = _child(annotation, part)
    annotation = _model_of(annotation)
    if annotation is None:
        return []
    return [f.alias or name for name, f in annotation.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional; step into a RootModel's root."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else annotation
    if isinstance(annotation, type) and issubclass(annotation, RootModel):
        return _unwrap(annotation.model_fields["root"].annotation)
    return annotation


def _child(annotation: Any, part: str | int) -> Any:
    annotation = _unwrap(annotation)
    model = _model_of(annotation)
    if model is not None:
        by_alias = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
        return by_alias.get(str(part))
    args = get_args(annotation)
    if get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    if get_origin(annotation) in (list, tuple) and args:
        return args[0]
    return None
