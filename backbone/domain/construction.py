"""Building the core's output events from values that are valid by construction, without validation.

The billing core emits three events per approved entry; validating them field by field was the largest
single cost of the core, and pydantic's own `model_construct` still spends more on per-field alias and
default handling than the fields themselves. `construct` does only what `model_construct` ends with,
for callers that pass every field: the values come from validated events, from UUIDs the core derives,
or from amounts quantized to their currency's minor units (see `billing.py`). Tests re-validate every
output of the domain scenarios (tests/unit/domain/test_domain_outputs.py), so a value that would not
pass validation fails there, not in production.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__  # frozen models refuse setattr; pydantic's model_construct uses this too
_FIELD_SETS: dict[type[BaseModel], set[str]] = {}


def construct(model: type[M], **values: Any) -> M:
    """An instance of `model` holding `values` as they are: every field must be given, nothing is checked.

    Equivalent to `model.model_construct(**values)` when `values` names every field of a model without
    extra fields, private attributes or a post-init hook, which is what the canonical events are.
    """
    return construct_from(model, values)


def construct_from(model: type[M], values: dict[str, Any]) -> M:
    """`construct` of a dict the instance keeps as its own (`__dict__`): the caller must not reuse it."""
    fields = _FIELD_SETS.get(model)
    if fields is None:
        fields = _FIELD_SETS[model] = set(model.__pydantic_fields__)
    assert len(values) == len(fields), f"{model.__name__} needs every field"
    instance = model.__new__(model)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", fields.copy())  # a set's copy reuses its hashes: cheaper than set()
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
