"""Reading a YAML configuration file: safely, strictly, and with errors that never quote it.

Shared by config.yaml and the web configuration: the safe loader, a key written twice in one
mapping refused (YAML would silently keep the last), and PyYAML's errors reduced to where and
what, without the excerpt of the file PyYAML quotes (it could hold a secret).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .schema import describe


class YamlFileError(Exception):
    """``part`` is ``"file"`` (cannot read, not text) or ``"yaml"`` (not valid YAML)."""

    def __init__(self, part: str, problem: str) -> None:
        super().__init__(part, problem)
        self.part, self.problem = part, problem


def read_yaml(path: str, max_bytes: int | None = None) -> tuple[str, object]:
    """The file's text and its YAML document (``None`` for an empty one)."""
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(-1 if max_bytes is None else max_bytes + 1)
    except OSError as exc:
        raise YamlFileError("file", f"cannot read the file: {os_reason(exc)}") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise YamlFileError("file", "the file is too large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            "file", f"not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    try:
        return text, yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise YamlFileError("yaml", _problem(exc)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = f"line {line}: character {exc.character!r} is not allowed in YAML"
        raise YamlFileError("yaml", problem) from None
    except yaml.YAMLError as exc:
        raise YamlFileError("yaml", f"invalid YAML ({type(exc).__name__})") from None
    except RecursionError:
        raise YamlFileError("yaml", "the document is nested too deeply") from None


def os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {describe(key)} (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _problem(exc: yaml.MarkedYAMLError) -> str:
    """Where and what, from PyYAML's error, without the quoted excerpt of the file."""
    problem = exc.problem or exc.context or "invalid YAML"
    mark = exc.problem_mark or exc.context_mark
    text = f"line {mark.line + 1} column {mark.column + 1}: {problem}" if mark else problem
    if exc.context and exc.problem:
        text += f" ({exc.context}"
        if exc.context_mark is not None:
            text += f" at line {exc.context_mark.line + 1} column {exc.context_mark.column + 1}"
        text += ")"
    return text
