"""The one YAML entry point. Mappings and sequences remember their line numbers.

`load(path)` returns plain Python data whose dicts are `LineDict` and lists `LineList`:
`obj.line` is the 1-based line of the node, `obj.key_line(k)` the line of key `k`.
"""

from __future__ import annotations

from typing import Any

import yaml

from distrib.errors import ConfigError

# The C parser is much faster on large inventories; same semantics.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineDict(dict):  # type: ignore[type-arg]
    """A dict that knows the line of itself and of each key."""

    line: int = 0
    key_lines: dict[Any, int]

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):  # type: ignore[type-arg]
    """A list that knows its line and the line of each item."""

    line: int = 0
    item_lines: list[int]

    def item_line(self, index: int) -> int:
        try:
            return self.item_lines[index]
        except (AttributeError, IndexError):
            return self.line


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise ConfigError(
                f"duplicate key {key!r}",
                file=getattr(loader, "source_name", None),
                line=key_node.start_mark.line + 1,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def loads(text: str, name: str = "<string>") -> Any:
    """Parse YAML text; errors become ConfigError naming `name` and the line."""
    try:
        loader = _Loader(text)
        loader.source_name = name
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise ConfigError(f"invalid YAML: {problem}", file=name, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=name) from None


def load(path: str) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from None
    return loads(text, path)


def dump(data: Any) -> str:
    """Serialise plain data to block-style YAML (inventories the lab writes, --list output)."""
    return yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False)


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


def line_of(node: Any) -> int:
    """Line of a loaded mapping or sequence (0 when it did not come from a file)."""
    return int(getattr(node, "line", 0))


def key_line(mapping: Any, key: Any) -> int:
    """Line of `key` in a loaded mapping, else of the mapping itself, else 0."""
    if isinstance(mapping, LineDict):
        return mapping.key_line(key)
    return line_of(mapping)


def item_line(sequence: Any, index: int) -> int:
    """Line of item `index` of a loaded sequence, else of the sequence itself, else 0."""
    if isinstance(sequence, LineList):
        return sequence.item_line(index)
    return line_of(sequence)
