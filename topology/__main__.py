"""`python -m topology`: one topology worker process (what `run_topology(workers=N)` starts N of)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import structlog

from backbone.errors import BackboneError
from backbone.observability import configure_logging
from backbone.settings import load_settings
from backbone.streams.errors import EXIT_BUG
from topology.app import DEFAULT_APP_ID, DEFAULT_ROUTING, run_topology


@click.command()
@click.option("--app-id", default=DEFAULT_APP_ID, help="consumer group, transactional id and internal topic prefix")
@click.option("--topic-prefix", default=None, help="prefix of every catalog topic name (tests)")
@click.option("--routing-path", type=click.Path(path_type=Path), default=DEFAULT_ROUTING)
@click.option("--slot", type=int, default=None, help="worker slot on this host (default: the first free one)")
def main(app_id: str, topic_prefix: str | None, routing_path: Path, slot: int | None) -> None:
    settings = load_settings()
    configure_logging("topology", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    log = structlog.get_logger("topology")
    try:
        run_topology(settings, 1, app_id=app_id, topic_prefix=topic_prefix, routing_path=routing_path, slot=slot)
    except BackboneError as error:
        log.critical("topology worker stopped", error=str(error))
        sys.exit(error.exit_code)
    except Exception:
        log.critical("topology worker failed", exc_info=True)
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
