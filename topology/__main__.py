"""`python -m topology`: one topology worker process (what `run_topology(workers=N)` starts N of)."""

from __future__ import annotations

from pathlib import Path

import click

from backbone.observability import configure_logging
from backbone.settings import load_settings
from topology.app import DEFAULT_APP_ID, DEFAULT_ROUTING, run_topology


@click.command()
@click.option("--app-id", default=DEFAULT_APP_ID, help="faust app id: consumer group and internal topic prefix")
@click.option("--topic-prefix", default=None, help="prefix of every catalog topic name (tests)")
@click.option("--routing-path", type=click.Path(path_type=Path), default=DEFAULT_ROUTING)
@click.option("--transport", type=click.Choice(["kafka"]), default="kafka", help="faust's Kafka client (aiokafka)")
def main(app_id: str, topic_prefix: str | None, routing_path: Path, transport: str) -> None:
    settings = load_settings()
    configure_logging("topology", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    run_topology(settings, 1, app_id=app_id, topic_prefix=topic_prefix, routing_path=routing_path, transport=transport)


if __name__ == "__main__":
    main()
