#!/usr/bin/env bash
# Prepare a fresh machine for backbone: system packages (Java, Maven, PostgreSQL server), a
# virtualenv with the project and its test tools, and the Kafka broker jars. Safe to run again:
# every step checks first and does nothing when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }

missing_packages() {
  command -v java >/dev/null 2>&1 || echo openjdk-17-jre-headless
  command -v mvn >/dev/null 2>&1 || echo maven
  if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo postgresql
  fi
  command -v setpriv >/dev/null 2>&1 || echo util-linux
}

packages=$(missing_packages | tr '\n' ' ')
if [ -n "${packages// /}" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing system packages: $packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  else
    say "missing system packages: $packages"
    say "install them (e.g. sudo apt-get install -y $packages) and run this again"
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  say "installing Python packages (pip install -e .[test])"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-* && touch "$stamp"
fi

say "resolving the Kafka broker jars (Maven; cached outside the work tree)"
.venv/bin/python - <<'PY'
from backbone.runtime.kafka import resolve_jars
from backbone.settings import load_settings
settings = load_settings()
path, downloaded = resolve_jars(settings.runtime, settings.kafka)
print(f"bootstrap: kafka jars {'downloaded to' if downloaded else 'cached in'} {path}", flush=True)
PY
