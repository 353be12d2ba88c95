"""Safe YAML loading that refuses a key given twice in one mapping, and reports a bad file in
one line.

PyYAML keeps the last of two equal keys without a word, so a preset that lists `strategies:`
twice silently runs a different matrix. Here that is a parse error, reported like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from peft_arena.common.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping "
                    f"(line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _StrictLoader.construct_mapping)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, plus a `yaml.YAMLError` for a duplicate key."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: Path, kind: str) -> Any:
    """A YAML file's content. A missing or malformed file is a UserError that names it as
    `kind` ("Preset", "Task file") and says what to do."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{kind} {path} does not exist.") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{kind} {path} is not valid YAML ({first}); fix the file.") from None
