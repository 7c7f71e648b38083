"""Strict YAML reading that remembers where every key is.

Refused: anchors and aliases (the "billion laughs" bomb), tags other than YAML's own
(`!!python/object` and friends), duplicate keys, files over `MAX_BYTES`, nesting deeper than
`MAX_DEPTH`. Scalars are read the way Go's yaml.v3 hands them to skopeo: plain `null`/`~` and
`true`/`false` are typed, every other scalar keeps its exact text (so the tag `1.10` stays
`1.10`, not the float 1.1); the schema converts text to numbers where it wants a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirrord.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64

KeyPath = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset(
    _CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge")
)
_NULL = re.compile(r"~|null|Null|NULL|")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """Something the reader refused: where, and why."""

    line: int
    path: KeyPath
    message: str


@dataclass(frozen=True)
class Document:
    """A parsed file: its data, the line of each key path, and problems found while reading."""

    name: str
    data: Any
    lines: dict[KeyPath, int] = field(repr=False)
    problems: tuple[ReadProblem, ...] = ()
    path: Path | None = None

    def line(self, path: KeyPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1


class UnreadableDocument(ConfigError):
    """A file that could not be read or parsed at all: where (`name`, `line`) and why."""

    def __init__(self, name: str, line: int | None, detail: str) -> None:
        super().__init__(f"{name}:{line}: {detail}" if line else f"{name}: {detail}")
        self.name, self.line, self.detail = name, line or 1, detail


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
# A problem for a configuration; a skopeo sync file is read as skopeo reads it (yaml.Unmarshal
# decodes the first document), with a warning instead.
SECOND_DOCUMENT = "a second YAML document: a file holds one"
_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


class _PyLoader(yaml.SafeLoader):
    """The pure-Python loader, for when libyaml is missing."""

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # PyYAML's scanner slows down quadratically with `[[[[…`: stop early.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, _TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(token_class)


_Loader: Any = getattr(yaml, "CSafeLoader", _PyLoader)  # libyaml: ten times faster


def _check_events(text: str, name: str) -> list[ReadProblem]:
    """One pass over the events: refuse deep nesting; note anchors and aliases (the stuff of
    YAML bombs), which the composer then shares rather than copies."""
    refused, depth = [], 0
    for event in yaml.parse(text, Loader=_Loader):
        mark: Any = event.start_mark
        line = mark.line + 1
        depth += isinstance(event, _OPEN) - isinstance(event, _CLOSE)
        if depth > MAX_DEPTH:
            raise UnreadableDocument(name, line, f"invalid YAML: {_TOO_DEEP}")
        if isinstance(event, yaml.AliasEvent):
            refused.append(ReadProblem(line, (), "aliases (*name) are not allowed"))
        elif getattr(event, "anchor", None) is not None:
            refused.append(ReadProblem(line, (), "anchors (&name) are not allowed"))
    return refused


class _Builder:
    """Turns a node tree into plain dicts, lists and scalars, recording lines and problems."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[ReadProblem] = []
        self.seen: set[int] = set()

    def _problem(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.problems.append(ReadProblem(node.start_mark.line + 1, path, message))

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if id(node) in self.seen:  # an alias: already refused, never expanded
            return None
        self.seen.add(id(node))
        if node.tag not in _ALLOWED_TAGS:
            self._problem(node, path, f"tag {node.tag!r} is not allowed")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        return _scalar(node) if isinstance(node, yaml.ScalarNode) else None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in result:
                first = self.lines[(*path, key)]
                self._problem(key_node, (*path, key), f"duplicate key (first at line {first})")
                continue
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _key(self, node: yaml.Node, path: KeyPath) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self._problem(node, path, "mapping keys must be plain strings")
            return None
        return str(node.value)

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.lines[(*path, index)] = item.start_mark.line + 1
            items.append(self.build(item, (*path, index)))
        return items


def _scalar(node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    if node.style:  # quoted or block scalars are always strings (plain: None or "")
        return text
    if _NULL.fullmatch(text):
        return None
    if _TRUE.fullmatch(text):
        return True
    if _FALSE.fullmatch(text):
        return False
    return text


def parse_yaml(text: str, name: str, path: Path | None = None) -> Document:
    """Parse YAML (or JSON, a subset of it) text; syntax errors raise ConfigError."""
    loader = None
    try:
        refused = _check_events(text, name)
        loader = _Loader(text)
        node = loader.get_node() if loader.check_node() else None  # the first document
        if loader.check_node():
            line = loader.peek_event().start_mark.line + 1
            refused.append(ReadProblem(line, (), SECOND_DOCUMENT))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        # Only the problem, never the snippet: the offending line may hold a password.
        raise UnreadableDocument(name, line, f"invalid YAML: {exc.problem}") from None
    finally:
        if loader is not None:
            loader.dispose()
    builder = _Builder()
    data = None if node is None else builder.build(node, ())
    lines = {(): 1, **builder.lines}
    return Document(name, data, lines, (*refused, *builder.problems), path)


def read_text(path: Path, name: str | None = None) -> str:
    """A UTF-8 text file of at most MAX_BYTES; ConfigError otherwise."""
    name = name or str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UnreadableDocument(name, None, f"cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise UnreadableDocument(
            name, None, f"larger than {MAX_BYTES // 1024} KiB; refusing to read it"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(name, None, f"not UTF-8 text (byte {exc.start})") from None


def read_yaml(path: Path, name: str | None = None) -> Document:
    """Read a YAML or JSON file (JSON is told by its `.json` suffix) of at most MAX_BYTES."""
    name = name or str(path)
    text = read_text(path, name)
    if path.suffix.lower() == ".json":
        # Valid JSON never holds a raw tab inside a string, and YAML refuses tab indentation.
        text = text.replace("\t", " ")
    return parse_yaml(text, name, path)
