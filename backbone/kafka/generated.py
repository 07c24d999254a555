"""Functions generated from Python source that backbone builds itself from a schema (never from a record).

The Avro writers (`avro_writer`), the compiled readers (`compiled`) and the compiled line writers of
`backbone emit` (`compiled_writer`) each turn a schema into straight-line source once, so that reading
or writing a record is one flat function. This is the one place that source becomes a function.
"""

from __future__ import annotations

from typing import Any


def define(source: str, name: str, namespace: dict[str, Any], label: str) -> Any:
    """The function `name` that `source` defines, run in `namespace`; its source is kept on it (`source`),
    for tests and for whoever wants to read what runs. `label` names it in tracebacks and profiles."""
    exec(compile(source, f"<{label}>", "exec"), namespace)  # our own generated source
    function = namespace[name]
    function.source = source
    return function
