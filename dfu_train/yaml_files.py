"""YAML files read safely, with a repeated key refused and errors that name line and column.

A sweep or config file is a few kilobytes written by hand, so hostile ones are refused before
they cost anything: a file over MAX_YAML_BYTES is not parsed (PyYAML reads ~50 KB/s), and a
document whose aliases expand to more than MAX_YAML_NODES nodes (a "billion laughs" bomb:
500 bytes that validation and error messages would walk as 10^9 values) is not constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dfu_train.errors import ConfigError, quoted

MAX_YAML_BYTES = 256 * 1024
MAX_YAML_NODES = 10_000  # scalars, lists and mappings, with every alias expanded
MAX_YAML_DEPTH = 100  # nesting levels (PyYAML composes recursively: deeper would crash it)


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, refusing a key given twice in one mapping (plain YAML keeps
    the last one silently, so a doubled setting would quietly lose one value) and a document
    whose aliases expand beyond MAX_YAML_NODES nodes or that nests beyond MAX_YAML_DEPTH."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} "
                                              "levels", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node

    def construct_object(self, node, deep=False):
        """PyYAML's constructors raise plain ValueErrors for some scalars (a 5000-digit int,
        month 13 in a date, `!!float abc`): make them YAML errors with the node's position."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{quoted(node.value)} is not a valid {tag} ({exc})",
                node.start_mark) from None


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the nodes of `root` as construction would see them, each alias expanded, without
    expanding anything: a node's size is computed once and reused wherever an alias names it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # nodes whose children are being counted: their ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            children = []
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value
        if not children_counted:
            if id(node) in sizes:
                continue
            if id(node) in open_nodes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to its own anchor",
                                                  node.start_mark)
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        if sizes[id(node)] > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand to more than {MAX_YAML_NODES} values (an alias "
                "bomb?); write the values out", node.start_mark)


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping names it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"key {quoted(key)} is given twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path) -> Any:
    """A YAML (or JSON) file's data, safely loaded; a syntax error, a repeated key, a file over
    MAX_YAML_BYTES or an alias bomb is one ConfigError naming the file (line and column)."""
    with path.open("rb") as handle:
        raw = handle.read(MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a sweep or config file may "
                          f"have at most {MAX_YAML_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start})") from None
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}not valid YAML ({problem})") from None
    finally:
        loader.dispose()
