"""Who may do what on the registry: HTTP basic credentials, hashed at rest, and three roles.

Confluent clients send `basic.auth.user.info` as an `Authorization: Basic` header; the registry checks
it against a users file that holds only scrypt hashes (`hash_password`), never a password. Each request
needs a role (`required_role`): `reader` for every read, lookups and compatibility checks (consumers,
deserializers), `writer` for registering schemas and soft deletes (producers, CI), `admin` for config
changes and permanent deletes. A role includes the ones below it. `GET /`, `/metrics` and `/leader`
(health, Prometheus, which instance leads) need none. Anonymous requests are refused (401) unless the
registry is started with `BACKBONE_SCHEMA_REGISTRY_ANONYMOUS_ROLE=reader`. See README "The schema
registry" for how `backbone up` creates the local users and where their passwords are.

scrypt (the stdlib's, OpenSSL's implementation) is memory-hard; a verification costs tens of
milliseconds, so a successful one is remembered under an HMAC of the credentials with a per-process
key: the password itself is never kept in memory beyond the request, and a wrong one is never cached.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbone.errors import ConfigurationError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
OPEN_PATHS = frozenset({"/", "/metrics", "/leader"})


class Role(enum.IntEnum):
    """Ordered: a role may do everything the roles below it may."""

    READER = 1
    WRITER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def named(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ConfigurationError(
                f"unknown registry role {name!r}", hint="use one of reader, writer, admin"
            ) from None


@dataclass(frozen=True)
class Principal:
    """The caller of a request, as the audit log names it."""

    user: str
    role: Role


ANONYMOUS = "anonymous"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64): the parameters travel with the hash, so they can be raised later."""
    salt = salt or secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the hash; False (never an exception) for a malformed hash."""
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        digest = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, binascii.Error):
        return False


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


def load_users(path: Path) -> dict[str, User]:
    """The users file: `{"users": {"<name>": {"role": "reader|writer|admin", "password_hash": "scrypt$..."}}}`."""
    try:
        document = json.loads(path.read_text())
        entries: dict[str, Any] = document["users"]
        return {
            name: User(name, Role.named(entry["role"]), str(entry["password_hash"])) for name, entry in entries.items()
        }
    except FileNotFoundError:
        raise ConfigurationError(
            f"the registry's users file {path} does not exist",
            hint="`backbone up` creates one; or write it with `python -m backbone.registry.users add NAME ROLE "
            "--file PATH`, or set BACKBONE_SCHEMA_REGISTRY_AUTH=none to run without authentication",
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigurationError(
            f"the registry's users file {path} is not valid: {e}",
            hint='expected {"users": {"NAME": {"role": "reader|writer|admin", "password_hash": "scrypt$..."}}}',
        ) from e


def write_users(path: Path, users: dict[str, User]) -> None:
    """Write the users file (mode 0600, replaced atomically)."""
    body = {"users": {u.name: {"role": u.role.label, "password_hash": u.password_hash} for u in users.values()}}
    write_private(path, json.dumps(body, indent=2) + "\n")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment where it exists with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(staging, path)


class Authenticator:
    """Checks `Authorization: Basic` headers against the users; remembers successful checks."""

    def __init__(self, users: dict[str, User], *, anonymous_role: Role | None = None) -> None:
        self._users = users
        self._anonymous_role = anonymous_role
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, Principal] = {}
        self._lock = threading.Lock()
        # Unknown users cost a full scrypt too, so timing does not tell which user names exist.
        self._decoy = hash_password(secrets.token_hex(8))

    def principal(self, authorization: str | None) -> Principal | None:
        """The caller, None when the credentials are missing (and anonymous access is off) or wrong."""
        if not authorization:
            return Principal(ANONYMOUS, self._anonymous_role) if self._anonymous_role else None
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return None
        user_name, password = credentials
        fingerprint = hmac.digest(self._key, f"{user_name}\0{password}".encode(), "sha256")
        with self._lock:
            known = self._verified.get(fingerprint)
        if known is not None:
            return known
        user = self._users.get(user_name)
        if not verify_password(password, user.password_hash if user else self._decoy) or user is None:
            return None
        principal = Principal(user.name, user.role)
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[fingerprint] = principal
        return principal

    def is_cached(self, authorization: str | None) -> bool:
        """Whether `principal` would answer without hashing (so it may run on the event loop)."""
        credentials = _basic_credentials(authorization or "")
        if credentials is None:
            return True
        fingerprint = hmac.digest(self._key, f"{credentials[0]}\0{credentials[1]}".encode(), "sha256")
        with self._lock:
            return fingerprint in self._verified


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, binascii.Error):
        return None
    return (user, password) if separator else None


def required_role(method: str, path: str, query: dict[str, str]) -> Role | None:
    """The least role a request needs; None for the open health and metrics paths."""
    if path in OPEN_PATHS:
        return None
    if method in ("GET", "HEAD", "OPTIONS"):
        return Role.READER
    if method == "POST" and (path.startswith("/compatibility/") or _is_lookup(path)):
        return Role.READER  # a lookup or a compatibility check changes nothing
    if path.startswith("/config") or path.startswith("/mode"):
        return Role.ADMIN
    if method == "DELETE" and query.get("permanent", "").lower() == "true":
        return Role.ADMIN
    return Role.WRITER


def _is_lookup(path: str) -> bool:
    """`POST /subjects/{subject}` (not `.../versions`): is this schema registered under the subject?"""
    parts = path.strip("/").split("/")
    return len(parts) == 2 and parts[0] == "subjects"


def is_write(method: str, path: str, query: dict[str, str]) -> bool:
    """Whether a request changes the registry (and so runs on the leader and is audited)."""
    role = required_role(method, path, query)
    return role is not None and role > Role.READER


def new_password() -> str:
    return secrets.token_urlsafe(24)
