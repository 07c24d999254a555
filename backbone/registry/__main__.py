"""`python -m backbone.registry`: run the schema registry with settings from the environment."""

from __future__ import annotations

import sys

from backbone.errors import BackboneError
from backbone.registry.service import run
from backbone.settings import load_settings


def main() -> int:
    try:
        run(load_settings())
    except BackboneError as e:
        print(f"backbone registry: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
