"""backbone: an event-driven integration backbone for professional-services firms.

The Python API for programs lives in the subpackages; the most used names are re-exported here
lazily so that `import backbone` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY_EXPORTS = {"Emitter": "producers.emitter"}
"""Public names and the module that defines them; imported on first use, not with `backbone`."""


def __getattr__(name: str) -> object:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'backbone' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
