"""What every params.yaml section shares: strict pydantic sections, and one-line error messages that name the key."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from alignloop.errors import UserError


class ConfigError(UserError, ValueError):
    """A problem with params.yaml, phrased as one line a person can act on."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as `key.path: must be > 0, got -1`."""
    path = ".".join(str(part) for part in error["loc"]) or "params"
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind in _COMPARISONS:
        bound = next(iter(ctx.values()))
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"{path}: must be {_COMPARISONS[kind]} {bound}, got {value!r}"
    if kind == "literal_error":
        return f"{path}: must be one of {ctx.get('expected')}, got {value!r}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "value_error":  # our validators say "field: problem"; fold the field into the path
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a cross-section check already names its full key
            return message
        field, sep, problem = message.partition(": ")
        return f"{path}.{field}: {problem}" if sep and field.isidentifier() else f"{path}: {message}"
    return f"{path}: {error['msg'][0].lower()}{error['msg'][1:]}, got {value!r}"


def require(value: Any, key: str, when: str, hint: str) -> None:
    """A field another field's value makes necessary: `<key>: required when <when> (<hint>)` if it is empty."""
    if not value:
        raise ValueError(f"{key}: required when {when} ({hint})")
