"""The registry's users on disk: the local runtime's first-run credentials, and a small tool for operators.

`ensure_local_users(home, ports)` is what `backbone up` calls: on first run it makes one user per role
(`reader`, `writer`, `admin`) with random passwords, writes their scrypt hashes to `users.json` (what
the registry reads) and the passwords, with the local instances' ports, to `credentials.json` (what
local clients read, see `backbone.settings.with_local_registry`), both mode 0600 in the registry's data
directory. Later runs keep the users and rewrite the ports. Outside the local runtime, operators add users with

    python -m backbone.registry.users add ci-pipeline writer --file /etc/backbone/registry-users.json

which asks for the password (or reads it from standard input) and stores only its hash.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from backbone.registry.auth import Role, User, hash_password, load_users, new_password, write_private, write_users

USERS_FILE = "users.json"
CREDENTIALS_FILE = "credentials.json"


def ensure_local_users(home: Path, ports: list[int]) -> tuple[Path, bool]:
    """The credentials file under `home`, with fresh users when there are none; records `ports` in it.

    Returns its path and whether the users were created now (passwords are kept across runs).
    """
    users_path, credentials_path = home / USERS_FILE, home / CREDENTIALS_FILE
    credentials = local_credentials(credentials_path)
    created = not (users_path.exists() and credentials)
    if created:
        passwords = {role.label: new_password() for role in Role}
        users = {name: User(name, Role.named(name), hash_password(pw)) for name, pw in passwords.items()}
        write_users(users_path, users)
        credentials = {name: f"{name}:{password}" for name, password in passwords.items()}
    document = {"ports": ports, "basic_auth_user_info": credentials}
    write_private(credentials_path, json.dumps(document, indent=2) + "\n")
    return credentials_path, created


def local_credentials(credentials_path: Path) -> dict[str, str]:
    """`{role: "user:password"}` from a local credentials file; empty when there is none."""
    try:
        return dict(json.loads(credentials_path.read_text())["basic_auth_user_info"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {}


def add_user(path: Path, name: str, role: Role, password: str) -> None:
    users = load_users(path) if path.exists() else {}
    users[name] = User(name, role, hash_password(password))
    write_users(path, users)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backbone.registry.users", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add or replace a user (the password is read, never echoed)")
    add.add_argument("name")
    add.add_argument("role", choices=[role.label for role in Role])
    add.add_argument("--file", type=Path, required=True, help="the users file (BACKBONE_SCHEMA_REGISTRY_USERS_FILE)")
    arguments = parser.parse_args(argv)
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        print("refused: empty password", file=sys.stderr)
        return 2
    add_user(arguments.file, arguments.name, Role.named(arguments.role), password)
    print(f"{arguments.name} ({arguments.role}) written to {arguments.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
