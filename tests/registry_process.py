"""`python -m backbone.registry` as child processes that a test can start, stop and kill.

Each `RegistryProcess` runs one instance on a port of its own against a store topic the test names;
instances on the same topic elect a leader among themselves. Authentication is on, as in production:
`RegistryUsers` creates one user per role (as `backbone up` does) in a directory of the test's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from confluent_kafka.schema_registry import SchemaRegistryClient

from backbone.registry.users import USERS_FILE, ensure_local_users, local_credentials
from tests.support import wait_until


class RegistryUsers:
    """A users file (hashes, for the registry) and every role's `user:password` (for the clients)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        path, _created = ensure_local_users(home, [])
        self.credentials = local_credentials(path)

    @property
    def users_file(self) -> Path:
        return self.home / USERS_FILE

    def auth(self, role: str) -> tuple[str, str]:
        user, _, password = self.credentials[role].partition(":")
        return user, password


class RegistryProcess:
    """One registry instance as a child process."""

    def __init__(self, bootstrap: str, topic: str, users: RegistryUsers, *, port: int | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.users = users
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_for_leader: bool = True) -> None:
        env = {
            **os.environ,
            "BACKBONE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "BACKBONE_SCHEMA_REGISTRY_PORT": str(self.port),
            "BACKBONE_SCHEMA_REGISTRY_TOPIC": self.topic,
            "BACKBONE_SCHEMA_REGISTRY_USERS_FILE": str(self.users.users_file),
            "BACKBONE_SCHEMA_REGISTRY_AUDIT_FILE": str(self.users.home / "audit.log"),
            "BACKBONE_SCHEMA_REGISTRY_ADVERTISED_URL": self.url,
        }
        log = (self.users.home / f"registry-{self.port}.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "backbone.registry"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        ready = self.has_leader if wait_for_leader else self.answers
        wait_until(ready, timeout=60, message=f"registry on {self.url} did not start")

    def stop(self) -> int:
        assert self._process is not None
        self._process.terminate()
        return self._process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the group, a transaction possibly left open."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, role: str = "admin") -> SchemaRegistryClient:
        """A fresh client: no cache from earlier calls hides what the server answers."""
        return SchemaRegistryClient({"url": self.url, "basic.auth.user.info": self.users.credentials[role]})

    def leader(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/leader", timeout=2).json())

    def answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"registry exited with {self._process.returncode} before answering")
        try:
            return httpx.get(f"{self.url}/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def has_leader(self) -> bool:
        return self.answers() and bool(self.leader().get("leader"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
