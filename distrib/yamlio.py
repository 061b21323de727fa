"""The one YAML entry point. Mappings and sequences remember their line numbers.

`load(path)` returns plain Python data whose dicts are `LineDict` and lists `LineList`:
`obj.line` is the 1-based line of the node, `obj.key_line(k)` the line of key `k`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from typing import Any

import yaml

from distrib.errors import ConfigError

# The C parser is much faster on large inventories; same semantics.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Aliases make a YAML document a graph: 539 bytes of nested `*a` lists expand to 835 MB once
# anything walks the result (issue 19, "billion laughs"). A document is refused when the tree
# it stands for -- every alias counted as a copy -- has more nodes than this. Real inventories
# and playbooks are far below (10,000 hosts with 20 vars each is about 400,000 nodes).
MAX_EXPANDED_NODES = 2_000_000


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
        if not isinstance(key, Hashable):
            raise ConfigError(
                f"a mapping key must be a plain value (a name or number), not {_kind(key)}",
                file=getattr(loader, "source_name", None),
                line=key_node.start_mark.line + 1,
            )
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


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def expanded_size(root: yaml.Node, name: str, limit: int = MAX_EXPANDED_NODES) -> int:
    """Nodes in the tree `root` stands for, each alias counted as a full copy of its anchor.

    Each distinct node is visited once (sizes are memoised), so a bomb is measured in the time
    of its text, not of its expansion. Raises ConfigError past `limit` or on a recursive alias.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: deep nesting must not hit Python's recursion limit
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > limit:
                raise _too_big(node, name, limit)
            sizes[key] = size
            continue
        if key in on_path:
            raise _recursive(node, name)
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _recursive(child, name)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _recursive(node: yaml.Node, name: str) -> ConfigError:
    return ConfigError(
        "a recursive alias (a node that contains itself) is not allowed",
        file=name,
        line=node.start_mark.line + 1,
    )


def _too_big(node: yaml.Node, name: str, limit: int) -> ConfigError:
    return ConfigError(
        f"the document expands to more than {limit:,} values through its aliases (*name)",
        file=name,
        line=node.start_mark.line + 1,
        hint="an alias bomb? write the data out, or use fewer nested aliases",
    )


@contextlib.contextmanager
def yaml_errors(name: str) -> Iterator[None]:
    """pyyaml's errors inside the block as one ConfigError naming `name` and the line."""
    try:
        yield
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", file=name) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise ConfigError(f"invalid YAML: {problem}", file=name, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=name) from None


def loads(text: str, name: str = "<string>") -> Any:
    """Parse YAML text; errors become ConfigError naming `name` and the line.

    Refuses documents whose aliases expand past MAX_EXPANDED_NODES (see `expanded_size`)."""
    with yaml_errors(name):
        loader = _Loader(text)
        loader.source_name = name
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            expanded_size(node, name)
            return loader.construct_document(node)
        finally:
            loader.dispose()


def loads_all(text: str, name: str = "<string>") -> list[Any]:
    """Every document of a multi-document YAML text (`---` separated), as `loads` parses one;
    empty documents are dropped. Same errors and alias limit (counted per document)."""
    with yaml_errors(name):
        loader = _Loader(text)
        loader.source_name = name
        docs: list[Any] = []
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                expanded_size(node, name)
                doc = loader.construct_document(node)
                if doc is not None:
                    docs.append(doc)
            return docs
        finally:
            loader.dispose()


def load(path: str) -> Any:
    """Read and parse a YAML file; a missing, unreadable or non-UTF-8 file is a ConfigError."""
    return loads(read_text(path), path)


def read_text(path: str, what: str = "") -> str:
    """A text file's content; unreadable or not UTF-8 (binary, Latin-1) is a ConfigError that
    names the file and the line of the first bad byte. `what` names it ("inventory")."""
    label = f" {what}" if what else ""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read{label}: {exc.strerror or exc}", file=path) from None
    return decode(data, path, what)


def decode(data: bytes, name: str, what: str = "") -> str:
    """UTF-8 text of `data`; else a ConfigError naming `name`, the line and the bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        noun = what if what.endswith("file") else f"{what} file".strip()
        raise ConfigError(
            f"{noun} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            file=name,
            line=line,
            hint="save it as UTF-8 (iconv -f latin1 -t utf-8), or check it is the right file",
        ) from None


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
