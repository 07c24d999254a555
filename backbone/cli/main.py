"""The `backbone` command: one click group; each command lives in its own module.

Commands are imported lazily (see `COMMANDS`) so `backbone --help` and `backbone status` stay fast and
a command's heavy dependencies (the Avro stack, FastAPI) load only when that command runs. Every command reads
settings from `BACKBONE_*` variables once, here, and turns `BackboneError`s into a message that says
what to do and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from backbone.errors import BackboneError

COMMANDS: dict[str, str] = {
    # name: "module:attribute" of a click command or group
    "up": "backbone.cli.runtime:up",
    "down": "backbone.cli.runtime:down",
    "status": "backbone.cli.runtime:status",
    "topics": "backbone.cli.runtime:topics",
    "run": "backbone.cli.run:run",
    "import": "backbone.cli.imports:import_",
    "emit": "backbone.cli.emit:emit",
    "tail": "backbone.cli.tail:tail",
    "schemas": "backbone.cli.schemas:schemas",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BackboneError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(error.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backbone")
def cli() -> None:
    """backbone: time tracking, ERP and billing connected over Apache Kafka.

    Settings come from BACKBONE_* environment variables (see README.md); the same
    commands work against the local runtime and a production cluster.
    """
