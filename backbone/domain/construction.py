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

import sys
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
_FIELD_SETS: dict[type[BaseModel], _FieldsSet] = {}


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
        fields = _FIELD_SETS[model] = _fields_set(model)
    assert len(values) == len(fields), f"{model.__name__} needs every field"
    # `object.__new__`, which is what `model.__new__` finds, read without the attribute lookup on the model
    # class: pydantic's metaclass defines `__getattr__`, so every class attribute read calls back into
    # Python for `type.__getattribute__` (~400 machine instructions against ~30; four events per entry)
    instance = _new(model)
    _set_dict(instance, values)
    _set_fields_set(instance, fields if fields.shared else fields.copy())
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


# The setters of the descriptors `object.__setattr__` finds for these four names on every model (BaseModel's
# `__dict__` and its three slots), called directly: `object.__setattr__` looks each name up through the
# model's bases first. ~1,500 fewer machine instructions per event (callgrind; four events per entry,
# docs/core-performance.md, "Thirteenth session").
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def key_sharing_dict(model: type[BaseModel]) -> dict[str, Any] | None:
    """A dict of `model`'s fields, every one None, whose copies share its keys (a CPython key-sharing
    dict, PEP 412): a copy holds only the values, ~210 bytes for a model of 14 fields against ~460 for
    a dict of its own, and copying it and updating the copy is faster than building a dict. None when a
    dict of its own is not larger, or the interpreter gives no such dict.

    The keys are those a private class keeps for its instances' attributes, set once in field order on
    its first instance (the model's own class keeps keys too, but code setting attributes on its
    instances can make it drop them). CPython leaves room for more attributes in such keys and trims it
    by one per new instance; a copy has a slot for each attribute and each unit of room, so instances
    are made until no room is left to trim: a copy then has one spare slot instead of up to 30."""
    holder_class = type(f"{model.__name__}Fields", (), {})
    holder = holder_class()
    for name in model.__pydantic_fields__:
        setattr(holder, name, None)
    for _ in range(_KEY_SHARING_ROOM):
        holder_class()
    shared: dict[str, Any] = holder.__dict__
    own = dict(zip(model.__pydantic_fields__, shared.values(), strict=True))  # as a builder makes it
    return shared if sys.getsizeof(shared.copy()) < sys.getsizeof(own) else None


_KEY_SHARING_ROOM = 30
"""The most keys CPython shares between instances (SHARED_KEYS_MAX_SIZE in 3.11's dictobject.c)."""


class _FieldsSet(set[str]):
    """A model's field names, shared by every instance `construct` builds when the model is frozen.

    pydantic adds to an instance's fields set only when an attribute is assigned, which a frozen
    model refuses, and `model_copy` copies the set before it adds the updated names. So one set per
    frozen model serves every instance: a copy per instance was ~600 bytes of every tracked entry's
    state (three to four events each; docs/topology-performance.md, "Sixth session")."""

    shared: bool


def _fields_set(model: type[BaseModel]) -> _FieldsSet:
    fields = _FieldsSet(model.__pydantic_fields__)
    fields.shared = bool(model.model_config.get("frozen"))
    return fields
