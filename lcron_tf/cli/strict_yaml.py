"""A YAML loader for configs that refuses what ``yaml.safe_load`` accepts silently.

``yaml.safe_load`` keeps the last value of a key repeated in one mapping without a word, so
``train: {epochs: 3, epochs: 30}`` would silently train 30 epochs. :func:`load_yaml` (and
:class:`StrictSafeLoader`) raise :class:`DuplicateKeyError` naming the dotted key instead.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping repeats a key; ``path`` is its dotted key (``train.epochs``)."""

    def __init__(self, path: str, first: Any, second: Any) -> None:
        self.path = path
        super().__init__(f"duplicate key (line {first.line + 1} column {first.column + 1}, "
                         f"again at line {second.line + 1} column {second.column + 1}); YAML "
                         "would silently keep only the last value")


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (:class:`DuplicateKeyError`).

    Plain ``yaml.safe_load`` keeps the last value of a repeated key without a word, so
    ``train: {epochs: 3, epochs: 30}`` would silently train 30 epochs.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _check_duplicates(node, "")
        return super().construct_document(node)


def _check_duplicates(node: yaml.Node, path: str, seen: set[int] | None = None) -> None:
    seen = set() if seen is None else seen
    if id(node) in seen:  # anchors / aliases: each node once
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], yaml.Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                dotted = f"{path}.{key_node.value}" if path else str(key_node.value)
                if ident in first:
                    raise DuplicateKeyError(dotted, first[ident].start_mark, key_node.start_mark)
                first[ident] = key_node
                _check_duplicates(value_node, dotted, seen)
            else:
                _check_duplicates(value_node, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{path}[{i}]", seen)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that rejects duplicate keys (:class:`StrictSafeLoader`)."""
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


__all__ = ["DuplicateKeyError", "StrictSafeLoader", "load_yaml"]
