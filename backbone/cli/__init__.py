"""The `backbone` command line."""
