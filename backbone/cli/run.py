"""`backbone run <component>`: long-running processes, each wired from settings and stopped by SIGTERM."""

from __future__ import annotations

import importlib

import click

from backbone.observability import configure_logging
from backbone.settings import load_settings

COMPONENTS: dict[str, str] = {
    # component: "module:function" taking the Settings
    "registry": "backbone.registry.service:run",
    "gateway": "producers.gateway:run_gateway",
    "poller": "producers.poller:run_poller",
}


@click.command()
@click.argument("component", type=click.Choice(sorted(COMPONENTS)))
def run(component: str) -> None:
    """Run one backbone process in the foreground until SIGTERM or Ctrl-C."""
    settings = load_settings()
    configure_logging(component, level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    module_name, function = COMPONENTS[component].split(":")
    getattr(importlib.import_module(module_name), function)(settings)
