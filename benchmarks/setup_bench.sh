#!/usr/bin/env bash
# Environments of the comparison baselines of benchmarks/topology_bench.py (docs/benchmarks.md).
#
#   .venv             gets the `bench` extra (faust-streaming) for benchmarks/faust_passthrough.py
#   .venv-bench-quix  a separate venv with quixstreams 3.28.1 for benchmarks/quix_passthrough.py:
#                     quixstreams pins its own confluent-kafka, which cannot share .venv with backbone's
#   wrk               Debian's HTTP load generator (apt), the client of benchmarks/gateway_bench.py: a
#                     C event loop, so the load generator is not the bottleneck (its CPU is measured)
#
# Idempotent: each step is skipped when its package is already importable. Run from anywhere:
#   bash benchmarks/setup_bench.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUIX_VERSION="3.28.1"
QUIX_VENV="$ROOT/.venv-bench-quix"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt)"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk
fi

if ! "$ROOT/.venv/bin/python" -c "import faust" 2>/dev/null; then
    echo "installing the bench extra (faust-streaming) into .venv"
    "$ROOT/.venv/bin/pip" install --quiet -e "$ROOT[bench]"
fi

if ! "$QUIX_VENV/bin/python" -c "import quixstreams, sys; sys.exit(quixstreams.__version__ != '$QUIX_VERSION')" 2>/dev/null; then
    echo "creating $QUIX_VENV with quixstreams==$QUIX_VERSION"
    # the base interpreter of .venv, so both environments run the same Python
    BASE="$("$PYTHON" -c 'import sys; print(sys._base_executable)')"
    "$BASE" -m venv "$QUIX_VENV"
    echo '*' >"$QUIX_VENV/.gitignore"  # a generated environment, never part of the repository
    "$QUIX_VENV/bin/pip" install --quiet --upgrade pip
    "$QUIX_VENV/bin/pip" install --quiet "quixstreams==$QUIX_VERSION"
fi

"$QUIX_VENV/bin/python" -W ignore -c "from importlib.metadata import version as v; print('quixstreams', v('quixstreams'), 'with confluent-kafka', v('confluent-kafka'))"
"$ROOT/.venv/bin/python" -c "import faust; print('faust-streaming', faust.__version__)"
wrk --version 2>&1 | head -1 || true
