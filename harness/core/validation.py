"""Strict pydantic models and reading YAML/JSON into them: every problem one line naming
the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medharness.core.errors import UserError


class Strict(BaseModel):
    """Unknown keys are refused, numbers must be finite, and instances are immutable: a typo
    or a NaN threshold fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


M = TypeVar("M", bound=BaseModel)


def format_validation_error(source: str, error: ValidationError) -> str:
    """All problems on one line: ``file: key.path: message; key.path: message``."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(parts)


def validate_file_data(schema: type[M], data: Any, source: str, what: str) -> M:
    """``data`` (parsed YAML or JSON) as ``schema``; every problem on one UserError line."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of {what} at the top level")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(source, exc)) from None


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice is an error: plain YAML keeps the last
    one silently, so a second ``learning_rate:`` would quietly win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: Path, what: str) -> Any:
    """A YAML file's data; a missing, unreadable or malformed file is one UserError line."""
    if path.is_dir():
        raise UserError(f"{what} file {path} is a folder; name a YAML file")
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "could not parse"
        raise UserError(f"{where}: malformed YAML ({problem})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a {what} file") from None
