"""`python -m backbone.cli` runs the same command as the `backbone` console script."""

from backbone.cli.main import cli

cli()
