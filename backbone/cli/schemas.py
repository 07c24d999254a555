"""`backbone schemas register|check`: the working tree's Avro contract against the schema registry.

`check` asks the registry whether each catalog topic's schema in `schemas/avro/` could be registered
under the subject's compatibility level, and lists what would break; CI runs it before merging a
schema change. `register` registers them all (what `backbone up` does too).
"""

from __future__ import annotations

import click

from backbone.errors import BackboneError
from backbone.settings import load_settings


class IncompatibleSchemasError(BackboneError):
    """The working tree's schemas would break readers or writers of registered data."""


@click.group()
def schemas() -> None:
    """Register or check the Avro schemas of every catalog topic."""


@schemas.command()
def register() -> None:
    """Register every catalog topic's value schema (idempotent)."""
    from backbone.kafka.serde import register_all, registry_client

    settings = load_settings()
    ids = register_all(registry_client(settings.registry.client_config()))
    for subject, schema_id in ids.items():
        click.echo(f"{subject}\tid {schema_id}")


@schemas.command()
def check() -> None:
    """Exit non-zero, listing the problems, when a schema is incompatible with the registered one."""
    from backbone.kafka.serde import check_compatibility, registry_client

    settings = load_settings()
    problems = check_compatibility(registry_client(settings.registry.client_config()))
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise IncompatibleSchemasError(
            f"{len(problems)} schema(s) are incompatible with what {settings.registry.endpoint} holds",
            hint="only add fields with defaults (or optional fields); never rename or remove one",
        )
    click.echo(f"all schemas are compatible with {settings.registry.endpoint}")
