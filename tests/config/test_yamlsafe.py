"""The strict YAML reader: what it refuses, how it types scalars, where it says keys are."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrord.config.yamlsafe import MAX_BYTES, parse_yaml, read_yaml
from mirrord.errors import ConfigError


def messages(text: str) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in parse_yaml(text, "t.yaml").problems]


def test_scalars_keep_their_text_as_skopeo_sees_it() -> None:
    doc = parse_yaml("tags: [1.10, 010, 1.0, 2021-07-11, yes, 'true', true, ~, null, '']\n", "t")
    assert doc.data == {
        "tags": ["1.10", "010", "1.0", "2021-07-11", "yes", "true", True, None, None, ""]
    }


def test_lines_of_keys_and_items() -> None:
    doc = parse_yaml("a:\n  b:\n    - x\n    - y\n  c: 1\n", "t")
    assert doc.line(("a",)) == 1
    assert doc.line(("a", "b", 1)) == 4
    assert doc.line(("a", "c")) == 5
    assert doc.line(("a", "c", "missing", "deeper")) == 5


def test_anchors_and_aliases_are_refused() -> None:
    assert messages("a: &x [1]\nb: *x\n") == [
        (1, "anchors (&name) are not allowed"),
        (2, "aliases (*name) are not allowed"),
    ]


def test_a_second_document_is_a_problem_naming_its_line() -> None:
    """A configuration is one document (a skopeo sync file's loader turns this problem into a
    warning and reads the first one, as skopeo does)."""
    assert messages("a: 1\n---\nb: 2\n") == [(3, "a second YAML document: a file holds one")]
    assert messages("---\na: 1\n") == []  # an explicit start of the only document


def test_a_yaml_bomb_is_not_expanded() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    doc = parse_yaml(bomb, "bomb.yaml")
    assert len(doc.problems) > 8
    assert doc.data["i"] == [None] * 9


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']\n",
        "a: !!python/name:os.system\n",
        "a: !custom x\n",
        "a: !!binary aGVsbG8=\n",
    ],
)
def test_foreign_tags_are_refused(text: str) -> None:
    doc = parse_yaml(text, "t")
    assert doc.data == {"a": None}
    assert "is not allowed" in doc.problems[0].message


def test_duplicate_keys_are_problems() -> None:
    assert messages("a: 1\nb: 2\na: 3\n") == [(3, "duplicate key (first at line 1)")]


def test_non_scalar_keys_are_problems() -> None:
    assert messages("? [a, b]\n: 1\n") == [(1, "mapping keys must be plain strings")]


def test_syntax_errors_do_not_show_the_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml("password: 'canary-secret\n", "t.yaml")
    assert str(err.value).startswith("t.yaml:2: invalid YAML")
    assert "canary" not in str(err.value)


def test_deep_nesting_is_refused_quickly() -> None:
    # PyYAML's scanner is quadratic in flow depth: a 1 MiB `[[[[` must fail fast.
    with pytest.raises(ConfigError, match=r"nested deeper than 64 levels|maximum nesting depth"):
        parse_yaml("[" * MAX_BYTES, "deep.yaml")
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        parse_yaml("".join(" " * i + "k:\n" for i in range(1400)), "deep.yaml")
    with pytest.raises(ConfigError, match=r"^t:65: invalid YAML: nested deeper than 64 levels$"):
        parse_yaml("".join(" " * i + "k:\n" for i in range(70)), "t")
    assert parse_yaml("".join(" " * i + "k:\n" for i in range(63)), "t").problems == ()


def test_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        read_yaml(big)


def test_json_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "images.json"
    path.write_text('{\n\t"a/b": "c/d",\n\t"e": ["f", "g"],\n\t"h": {"i": true}\n}\n')
    doc = read_yaml(path)
    assert doc.data == {"a/b": "c/d", "e": ["f", "g"], "h": {"i": True}}
    assert doc.line(("e",)) == 3


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        read_yaml(tmp_path / "missing.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: \xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml(latin)


def test_the_pure_python_loader_behaves_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from mirrord.config import yamlsafe

    monkeypatch.setattr(yamlsafe, "_Loader", yamlsafe._PyLoader)
    test_scalars_keep_their_text_as_skopeo_sees_it()
    test_anchors_and_aliases_are_refused()
    test_a_yaml_bomb_is_not_expanded()
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        parse_yaml("[" * MAX_BYTES, "deep.yaml")
