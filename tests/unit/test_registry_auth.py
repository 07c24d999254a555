"""Who may do what on the registry: each role gets exactly its rights, with Confluent's 401/403 bodies.

The app runs over a log in memory (tests/registry_memory.py) with real scrypt-hashed users, so these are
the same checks the HTTP server makes; tests/integration/test_registry_ha.py covers the real process.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backbone.registry.app import create_app
from backbone.registry.auth import Authenticator, Role, User, hash_password, load_users, required_role, verify_password
from backbone.registry.users import ensure_local_users, local_credentials
from backbone.settings import RegistrySettings, with_local_registry
from tests.registry_memory import leading_store

SCHEMA = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]})
EVOLVED = json.dumps(
    {
        "type": "record",
        "name": "A",
        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "int", "default": 0}],
    }
)
PASSWORDS = {"reader": "r-secret", "writer": "w-secret", "admin": "a-secret"}


@pytest.fixture(scope="module")
def users() -> dict[str, User]:
    return {name: User(name, Role.named(name), hash_password(pw)) for name, pw in PASSWORDS.items()}


@pytest.fixture(scope="module")
def authenticator(users: dict[str, User]) -> Authenticator:
    """One for the module: scrypt runs once per credential, as in a long-running registry."""
    return Authenticator(users)


class Registry:
    """The app with one subject `kept` (version 1) and one soft-deleted subject `gone`; the audit file."""

    def __init__(self, authenticator: Authenticator, tmp_path: Path) -> None:
        self.audit_file = tmp_path / "audit.log"
        app = create_app(leading_store(), authenticator=authenticator, audit_file=self.audit_file)
        self.http = TestClient(app)
        admin = basic("admin", PASSWORDS["admin"])
        for subject in ("kept", "gone"):
            assert (
                self.http.post(f"/subjects/{subject}/versions", json={"schema": SCHEMA}, headers=admin).status_code
                == 200
            )
        assert self.http.delete("/subjects/gone", headers=admin).status_code == 200

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def as_role(role: str) -> dict[str, str]:
    return {} if role == "anonymous" else basic(role, PASSWORDS[role])


# (request, the least role that may make it); every request succeeds (2xx) for that role and above.
REQUESTS = [
    pytest.param(("GET", "/subjects", None), "reader", id="list-subjects"),
    pytest.param(("GET", "/subjects/kept/versions/latest", None), "reader", id="read-version"),
    pytest.param(("GET", "/schemas/ids/1", None), "reader", id="read-by-id"),
    pytest.param(("GET", "/config", None), "reader", id="read-config"),
    pytest.param(("POST", "/subjects/kept", {"schema": SCHEMA}), "reader", id="lookup"),
    pytest.param(("POST", "/compatibility/subjects/kept/versions/latest", {"schema": EVOLVED}), "reader", id="check"),
    pytest.param(("POST", "/subjects/kept/versions", {"schema": EVOLVED}), "writer", id="register"),
    pytest.param(("DELETE", "/subjects/kept/versions/1", None), "writer", id="soft-delete-version"),
    pytest.param(("DELETE", "/subjects/kept", None), "writer", id="soft-delete-subject"),
    pytest.param(("DELETE", "/subjects/gone?permanent=true", None), "admin", id="hard-delete-subject"),
    pytest.param(("DELETE", "/subjects/gone/versions/1?permanent=true", None), "admin", id="hard-delete-version"),
    pytest.param(("PUT", "/config", {"compatibility": "FULL"}), "admin", id="set-global-config"),
    pytest.param(("PUT", "/config/kept", {"compatibility": "NONE"}), "admin", id="set-subject-config"),
    pytest.param(("DELETE", "/config", None), "admin", id="delete-global-config"),
]
ROLES = ["anonymous", "reader", "writer", "admin"]
RANK = {name: rank for rank, name in enumerate(ROLES)}


@pytest.mark.parametrize("caller", ROLES)
@pytest.mark.parametrize(("request_", "least"), REQUESTS)
def test_each_role_gets_exactly_its_rights(
    authenticator: Authenticator, tmp_path: Path, request_: tuple[str, str, Any], least: str, caller: str
) -> None:
    registry = Registry(authenticator, tmp_path)
    method, path, body = request_
    response = registry.http.request(method, path, json=body, headers=as_role(caller))
    if caller == "anonymous":
        assert (response.status_code, response.json()) == (401, {"error_code": 40101, "message": "Unauthorized"})
        assert response.headers["www-authenticate"].startswith("Basic realm=")
    elif RANK[caller] < RANK[least]:
        assert response.status_code == 403
        assert response.json()["error_code"] == 40301
        assert f"needs the {least} role" in response.json()["message"]
    else:
        assert 200 <= response.status_code < 300, response.text


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(basic("writer", "wrong"), id="wrong-password"),
        pytest.param(basic("nobody", "w-secret"), id="unknown-user"),
        pytest.param({"Authorization": "Basic not-base64!"}, id="malformed"),
        pytest.param({"Authorization": "Bearer w-secret"}, id="other-scheme"),
        pytest.param({"Authorization": "Basic " + base64.b64encode(b"writer").decode()}, id="no-colon"),
    ],
)
def test_bad_credentials_are_401(authenticator: Authenticator, tmp_path: Path, headers: dict[str, str]) -> None:
    response = Registry(authenticator, tmp_path).http.get("/subjects", headers=headers)
    assert (response.status_code, response.json()["error_code"]) == (401, 40101)


@pytest.mark.parametrize("path", ["/", "/metrics", "/leader"])
def test_health_metrics_and_leader_need_no_credentials(authenticator: Authenticator, tmp_path: Path, path: str) -> None:
    assert Registry(authenticator, tmp_path).http.get(path).status_code == 200


def test_anonymous_readers_when_configured_may_read_but_not_write(users: dict[str, User], tmp_path: Path) -> None:
    registry = Registry(Authenticator(users, anonymous_role=Role.READER), tmp_path)
    assert registry.http.get("/subjects").json() == ["kept"]
    refused = registry.http.post("/subjects/new/versions", json={"schema": SCHEMA})
    assert (refused.status_code, refused.json()["error_code"]) == (403, 40301)


def test_every_write_attempt_is_audited_with_who_what_and_result(authenticator: Authenticator, tmp_path: Path) -> None:
    registry = Registry(authenticator, tmp_path)
    registry.http.get("/subjects", headers=as_role("reader"))  # reads are not audited
    registry.http.post("/subjects/kept/versions", json={"schema": EVOLVED}, headers=as_role("writer"))
    registry.http.post("/subjects/kept/versions", json={"schema": EVOLVED}, headers=as_role("reader"))
    registry.http.put("/config", json={"compatibility": "FULL"}, headers=basic("admin", "guess"))

    setup, (registered, denied, unauthenticated) = registry.audit()[:3], registry.audit()[3:]
    assert [entry["user"] for entry in setup] == ["admin"] * 3
    assert registered | {"at": None} == registered | {
        "at": None,
        "user": "writer",
        "role": "writer",
        "method": "POST",
        "path": "/subjects/kept/versions",
        "subject": "kept",
        "status": 200,
        "result": "ok",
        "answer": {"id": 2},  # `gone` shares id 1 with `kept`
    }
    assert (denied["user"], denied["result"], denied["status"]) == ("reader", "denied", 403)
    assert (unauthenticated["user"], unauthenticated["claimed_user"]) == ("anonymous", "admin")
    assert unauthenticated["result"] == "unauthenticated" and "guess" not in json.dumps(unauthenticated)
    assert stat.S_IMODE(registry.audit_file.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/subjects/a%2Fb/versions", Role.READER, id="get-is-read"),
        pytest.param("POST", "/subjects/a%2Fversions", Role.READER, id="lookup-of-slashed-subject"),
        pytest.param("POST", "/subjects/a%2Fb/versions", Role.WRITER, id="register-slashed-subject"),
        pytest.param("POST", "/compatibility/subjects/a/versions/latest", Role.READER, id="compatibility"),
        pytest.param("DELETE", "/subjects/a", Role.WRITER, id="soft-delete"),
        pytest.param("PUT", "/mode", Role.ADMIN, id="mode-change"),
        pytest.param("GET", "/metrics", None, id="metrics-open"),
    ],
)
def test_required_role_reads_the_encoded_path(method: str, path: str, expected: Role | None) -> None:
    assert required_role(method, path, {}) is expected


def test_hashes_are_salted_scrypt_and_verify_only_the_right_password() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("scrypt$32768$8$1$")
    assert verify_password("pw", first) and not verify_password("pW", first)
    assert not verify_password("pw", "md5$abc") and not verify_password("pw", "scrypt$broken")


def test_local_users_are_created_once_private_and_hashed(tmp_path: Path) -> None:
    path, created = ensure_local_users(tmp_path, [8081, 8082])
    credentials = local_credentials(path)
    again_path, created_again = ensure_local_users(tmp_path, [8081])

    assert created and not created_again and local_credentials(again_path) == credentials
    assert set(credentials) == {"reader", "writer", "admin"}
    for file in (path, tmp_path / "users.json"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    stored = load_users(tmp_path / "users.json")
    user, _, password = credentials["writer"].partition(":")
    assert stored[user].role is Role.WRITER and password not in (tmp_path / "users.json").read_text()
    assert verify_password(password, stored[user].password_hash)


def test_local_clients_get_the_writer_and_every_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKBONE_SCHEMA_REGISTRY_URL", "BACKBONE_SCHEMA_REGISTRY_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BACKBONE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", raising=False)
    path, _ = ensure_local_users(tmp_path, [8081, 8099])
    local = with_local_registry(RegistrySettings(port=8081), tmp_path)
    assert local.client_config() == {
        "url": "http://127.0.0.1:8081,http://127.0.0.1:8099",
        "basic.auth.user.info": local_credentials(path)["writer"],
    }
    configured = RegistrySettings(port=8081, basic_auth_user_info="ci:token")  # type: ignore[arg-type]
    assert with_local_registry(configured, tmp_path).client_config()["basic.auth.user.info"] == "ci:token"
    external = RegistrySettings(url="https://registry.example")
    assert with_local_registry(external, tmp_path).client_config() == {"url": "https://registry.example"}
