"""The ERP and billing simulators over real HTTP on loopback with a real PostgreSQL: Stripe's
idempotency rules (replay, mismatch, concurrent keys), upsert by external id, validation codes, fault
injection through the admin endpoint, the migration runner, and `backbone run billing-sim` itself.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from backbone.migrations import MigrationError, apply_migrations
from consumers.simulators import billing, erp
from consumers.simulators.faults import FaultPlan, FaultSchedule
from consumers.simulators.settings import BillingSimSettings, ErpSimSettings
from tests.support import unique_name, wait_until

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-tests"
BACKBONE = str(Path(sys.executable).parent / "backbone")  # the console script installed beside this Python
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class LiveServer:
    """uvicorn serving an app on a free loopback port in a thread (stopped by should_exit, no signals)."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=15, message="simulator started")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def _schema_name(prefix: str) -> str:
    return unique_name(prefix).replace("-", "_")


def _drop(conninfo: str, schema: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _count(conninfo: str, schema: str, table: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()
    assert row is not None
    return int(row[0])


# --- fixtures -------------------------------------------------------------------------------------

BillingFactory = Callable[..., tuple[httpx.Client, BillingSimSettings]]
ErpFactory = Callable[..., tuple[httpx.Client, ErpSimSettings]]


@pytest.fixture
def billing_sim(postgres_conninfo: str) -> Iterator[BillingFactory]:
    """Start billing simulators, each on a schema of its own; stopped and dropped afterwards."""
    started: list[tuple[LiveServer, httpx.Client, str]] = []

    def start(**overrides: Any) -> tuple[httpx.Client, BillingSimSettings]:
        settings = BillingSimSettings(db_schema=_schema_name("billing_sim"), admin_token=SecretStr(ADMIN), **overrides)
        apply_migrations(postgres_conninfo, settings.db_schema, billing.MIGRATIONS)
        server = LiveServer(billing.create_billing_app(settings, postgres_conninfo))
        client = httpx.Client(base_url=server.__enter__(), timeout=30)
        started.append((server, client, settings.db_schema))
        return client, settings

    yield start
    for server, client, schema in started:
        client.close()
        server.__exit__()
        _drop(postgres_conninfo, schema)


@pytest.fixture
def erp_sim(postgres_conninfo: str) -> Iterator[ErpFactory]:
    """Start ERP simulator instances with unique names (so unique schemas); stopped and dropped afterwards."""
    started: list[tuple[LiveServer, httpx.Client, str]] = []

    def start(**overrides: Any) -> tuple[httpx.Client, ErpSimSettings]:
        settings = ErpSimSettings(**{"name": unique_name("erp"), "admin_token": ADMIN, **overrides})
        apply_migrations(postgres_conninfo, settings.db_schema, erp.MIGRATIONS)
        server = LiveServer(erp.create_erp_app(settings, postgres_conninfo))
        client = httpx.Client(base_url=server.__enter__(), timeout=30)
        started.append((server, client, settings.db_schema))
        return client, settings

    yield start
    for server, client, schema in started:
        client.close()
        server.__exit__()
        _drop(postgres_conninfo, schema)


def _item(customer: str, **change: Any) -> dict[str, str]:
    """Stripe's form parameters of one invoice item."""
    params = {
        "customer": customer,
        "amount": "15000",
        "currency": "eur",
        "tax_code": "txcd_10000000",
        "description": "Consulting, 2.5 h",
        "metadata[work_date]": "2026-11-03",
        "metadata[candidate_id]": unique_name("cand"),
    }
    for name, value in change.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return params


def _answered(send: Callable[[], httpx.Response], status: int) -> Callable[[], httpx.Response | None]:
    """A wait_until condition: the response once `send` is answered with `status`, else None."""

    def attempt() -> httpx.Response | None:
        response = send()
        return response if response.status_code == status else None

    return attempt


def _line(external_id: str, **change: Any) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "type": "REVENUE",
        "project": "P-1",
        "worker": "W-1",
        "tranDate": "2026-11-03",
        "amount": "375.00",
        "currency": "EUR",
        **change,
    }


# --- billing: Stripe's idempotency ----------------------------------------------------------------


def test_a_retried_post_with_the_same_key_stores_one_item_and_replays_the_first_response(
    billing_sim: BillingFactory,
) -> None:
    client, _ = billing_sim()
    customer, key = unique_name("cust"), unique_name("key")
    params = _item(customer)

    first = client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key})
    again = client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key})

    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert first.json()["amount"] == 15000 and first.json()["currency"] == "eur"
    items = client.get("/v1/invoiceitems", params={"customer": customer}).json()["data"]
    assert [item["id"] for item in items] == [first.json()["id"]]


def test_the_same_key_with_other_parameters_is_an_idempotency_error_and_stores_nothing(
    billing_sim: BillingFactory,
) -> None:
    client, _ = billing_sim()
    customer, key = unique_name("cust"), unique_name("key")
    params = _item(customer)
    assert client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key}).status_code == 200

    other = client.post("/v1/invoiceitems", data={**params, "amount": "15001"}, headers={"Idempotency-Key": key})

    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    assert len(client.get("/v1/invoiceitems", params={"customer": customer}).json()["data"]) == 1


def test_concurrent_requests_with_one_key_create_one_item(billing_sim: BillingFactory, postgres_conninfo: str) -> None:
    client, settings = billing_sim()
    customer, key = unique_name("cust"), unique_name("key")
    params = _item(customer)
    gate = threading.Barrier(10)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            gate.wait(timeout=10)
            return own.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(post, range(10)))

    created = {a.json()["id"] for a in answers if a.status_code == 200}
    in_use = [a for a in answers if a.status_code == 409]
    assert len(created) == 1, [a.text for a in answers]
    assert len(created) + len(in_use) <= 10 and all(
        a.json()["error"]["code"] == "idempotency_key_in_use" for a in in_use
    )
    assert {a.status_code for a in answers} <= {200, 409}
    retried = client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key})
    assert retried.json()["id"] in created and retried.headers["Idempotent-Replayed"] == "true"
    assert _count(postgres_conninfo, settings.db_schema, "invoice_items") == 1


def test_a_line_without_tax_code_is_refused_and_the_key_stays_usable(billing_sim: BillingFactory) -> None:
    client, _ = billing_sim()
    customer, key = unique_name("cust"), unique_name("key")

    refused = client.post("/v1/invoiceitems", data=_item(customer, tax_code=None), headers={"Idempotency-Key": key})
    fixed = client.post("/v1/invoiceitems", data=_item(customer), headers={"Idempotency-Key": key})

    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "invalid_request_error",
        "code": "tax_code_missing",
        "message": "every invoice item needs a tax_code",
        "param": "tax_code",
    }
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers


def test_draft_invoices_per_client_and_month_total_their_signed_items_in_minor_units(
    billing_sim: BillingFactory,
) -> None:
    client, _ = billing_sim()
    customer = unique_name("cust")
    for amount, work_date, currency in [
        ("15000", "2026-11-03", "eur"),
        ("-2500", "2026-11-20", "eur"),  # a credit: an adjustment
        ("9999", "2026-12-01", "eur"),
        ("12345", "2026-11-05", "kwd"),  # three decimals
        ("1500", "2026-11-05", "jpy"),  # none
    ]:
        params = _item(customer, amount=amount, currency=currency, **{"metadata[work_date]": work_date})
        assert client.post("/v1/invoiceitems", data=params).status_code == 200

    november = client.get("/v1/invoices", params={"customer": customer, "period": "2026-11"}).json()["data"]

    totals = {(i["currency"], i["total"], i["display_total"], i["lines"]["total_count"]) for i in november}
    assert totals == {("eur", 12500, "125.00", 2), ("kwd", 12345, "12.345", 1), ("jpy", 1500, "1500", 1)}
    assert all(i["status"] == "draft" and i["period"] == "2026-11" for i in november)
    december = client.get("/v1/invoices", params={"customer": customer, "period": "2026-12"}).json()["data"]
    assert [(i["total"], i["display_total"]) for i in december] == [(9999, "99.99")]
    one = client.get(f"/v1/invoices/{december[0]['id']}").json()
    assert one["lines"]["data"][0]["display_amount"] == "99.99"


def test_json_bodies_are_accepted_and_floats_refused(billing_sim: BillingFactory) -> None:
    client, _ = billing_sim()
    body = {
        "customer": unique_name("cust"),
        "amount": -1500,
        "currency": "usd",
        "tax_code": "txcd_1",
        "metadata": {"work_date": "2026-11-03"},
    }
    assert client.post("/v1/invoiceitems", json=body).json()["amount"] == -1500
    refused = client.post("/v1/invoiceitems", json={**body, "amount": 15.0})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "parameter_invalid_integer"


# --- ERP: upsert by external id and validation ----------------------------------------------------


def test_a_line_is_upserted_by_external_id_never_duplicated(erp_sim: ErpFactory) -> None:
    client, settings = erp_sim()
    external_id = unique_name("post")

    created = client.post("/v1/journal-lines", json=_line(external_id))
    retried = client.post("/v1/journal-lines", json=_line(external_id, amount="375.0"))
    conflicting = client.post("/v1/journal-lines", json=_line(external_id, amount="-375.00"))

    assert (created.status_code, created.headers["X-Upsert-Result"]) == (201, "created")
    assert (retried.status_code, retried.headers["X-Upsert-Result"]) == (200, "unchanged")
    assert retried.json()["id"] == created.json()["id"] and retried.json()["amount"] == "375.00"
    assert conflicting.status_code == 409 and conflicting.json()["code"] == "EXTERNAL_ID_CONFLICT"
    listed = client.get("/v1/journal-lines", params={"externalId": external_id}).json()
    assert listed["totalResults"] == 1 and listed["items"][0]["erp"] == settings.name
    assert client.get(f"/v1/journal-lines/{external_id}").json()["version"] == 1


def test_with_on_conflict_update_other_content_updates_the_document(erp_sim: ErpFactory) -> None:
    client, _ = erp_sim(on_conflict="update")
    external_id = unique_name("post")
    created = client.post("/v1/journal-lines", json=_line(external_id)).json()

    updated = client.post("/v1/journal-lines", json=_line(external_id, amount="400.00", memo="corrected"))

    assert (updated.status_code, updated.headers["X-Upsert-Result"]) == (200, "updated")
    assert updated.json()["id"] == created["id"]
    assert (updated.json()["version"], updated.json()["amount"]) == (2, "400.00")


def test_concurrent_upserts_of_one_external_id_make_one_document(erp_sim: ErpFactory, postgres_conninfo: str) -> None:
    client, settings = erp_sim()
    external_id = unique_name("post")
    gate = threading.Barrier(10)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            gate.wait(timeout=10)
            return own.post("/v1/journal-lines", json=_line(external_id))

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(post, range(10)))

    assert sorted(a.status_code for a in answers) == [200] * 9 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert _count(postgres_conninfo, settings.db_schema, "journal_lines") == 1


@pytest.mark.parametrize(
    ("settings", "change", "status", "code"),
    [
        pytest.param({"closed_before": "2026-12-01"}, {}, 422, "PERIOD_CLOSED", id="closed-period"),
        pytest.param({"closed_periods": {"2026-11"}}, {}, 422, "PERIOD_CLOSED", id="closed-month"),
        pytest.param({"projects": {"P-2"}}, {}, 422, "UNKNOWN_PROJECT", id="not-on-the-allow-list"),
        pytest.param({"reject_project_pattern": "^P-1$"}, {}, 422, "UNKNOWN_PROJECT", id="reject-pattern"),
        pytest.param({"cost_centres": {"CC-1"}}, {"costCentre": "CC-2"}, 422, "UNKNOWN_COST_CENTRE", id="cost-centre"),
        pytest.param({}, {"amount": 375.0}, 400, "INVALID_REQUEST", id="json-number"),
    ],
)
def test_refused_lines_get_a_4xx_with_a_code_and_store_nothing(
    erp_sim: ErpFactory, settings: dict[str, Any], change: dict[str, Any], status: int, code: str
) -> None:
    client, _ = erp_sim(**settings)
    external_id = unique_name("post")

    refused = client.post("/v1/journal-lines", json=_line(external_id, **change))

    assert (refused.status_code, refused.json()["code"]) == (status, code)
    assert refused.json()["o:errorDetails"][0]["o:errorCode"] == code
    assert client.get(f"/v1/journal-lines/{external_id}").status_code == 404


def test_named_instances_keep_their_documents_apart(erp_sim: ErpFactory) -> None:
    legacy, _ = erp_sim(name=unique_name("legacy-erp"))
    cloud, _ = erp_sim(name=unique_name("cloud-erp"))
    external_id = unique_name("post")

    assert legacy.post("/v1/journal-lines", json=_line(external_id)).status_code == 201

    assert cloud.get(f"/v1/journal-lines/{external_id}").status_code == 404
    assert cloud.post("/v1/journal-lines", json=_line(external_id, type="COST")).status_code == 201


# --- fault injection ------------------------------------------------------------------------------


def test_a_burst_of_503s_then_success(billing_sim: BillingFactory) -> None:
    client, _ = billing_sim()
    assert client.post("/admin/faults", json={"burst": 3}, headers=AUTH).json()["burst_left"] == 3
    key, params = unique_name("key"), _item(unique_name("cust"))

    answers = [client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key}) for _ in range(4)]

    assert [a.status_code for a in answers] == [503, 503, 503, 200]
    assert answers[0].json()["error"]["type"] == "api_error"
    assert "Idempotent-Replayed" not in answers[3].headers  # refused requests stored nothing


def test_throttled_requests_get_429_with_retry_after(erp_sim: ErpFactory) -> None:
    client, _ = erp_sim()
    client.post("/admin/faults", json={"throttle": 2, "retry_after_s": 3}, headers=AUTH)

    answers = [client.post("/v1/journal-lines", json=_line(unique_name("post"))) for _ in range(3)]

    assert [(a.status_code, a.headers.get("Retry-After")) for a in answers] == [(429, "3"), (429, "3"), (201, None)]
    assert answers[0].json()["code"] == "RATE_LIMIT"


def test_an_outage_window_refuses_everything_then_ends_by_itself(erp_sim: ErpFactory) -> None:
    client, _ = erp_sim()
    client.post("/admin/faults", json={"outage_s": 1.5}, headers=AUTH)
    external_id = unique_name("post")

    down = client.post("/v1/journal-lines", json=_line(external_id))
    assert down.status_code == 503 and int(down.headers["Retry-After"]) in (1, 2)
    assert client.get("/healthz").status_code == 200  # operators' routes stay up

    back = wait_until(
        _answered(lambda: client.post("/v1/journal-lines", json=_line(external_id)), 201),
        timeout=10,
        interval=0.1,
        message="the outage window ends",
    )
    assert back.json()["externalId"] == external_id


def test_a_slow_first_byte_makes_the_client_retry_what_already_happened(
    billing_sim: BillingFactory, postgres_conninfo: str
) -> None:
    client, settings = billing_sim()
    client.post("/admin/faults", json={"slow_first_byte_ms": 2000}, headers=AUTH)
    key, params = unique_name("key"), _item(unique_name("cust"))

    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key}, timeout=0.5)
    client.delete("/admin/faults", headers=AUTH)
    retried = wait_until(
        _answered(lambda: client.post("/v1/invoiceitems", data=params, headers={"Idempotency-Key": key}), 200),
        timeout=10,
        message="the retry is answered once the first request has committed",
    )

    assert retried.headers["Idempotent-Replayed"] == "true"
    assert _count(postgres_conninfo, settings.db_schema, "invoice_items") == 1


def test_random_errors_follow_the_seed_exactly(billing_sim: BillingFactory) -> None:
    plan = FaultPlan(error_rate=0.4, throttle_rate=0.2, seed=7)
    client, _ = billing_sim(faults=plan)
    expected_schedule = FaultSchedule(plan)
    expected = [expected_schedule.decide().status for _ in range(30)]

    got = [client.get("/v1/invoiceitems", params={"limit": 1}).status_code for _ in range(30)]

    assert got == expected and {500, 429, 200} <= set(got)


def test_the_admin_endpoint_needs_the_token(billing_sim: BillingFactory) -> None:
    client, _ = billing_sim()
    assert client.post("/admin/faults", json={"burst": 1}).status_code == 401
    assert client.post("/admin/faults", json={"burst": 1}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/admin/faults", json={"burst": -1}, headers=AUTH).status_code == 400
    assert client.get("/admin/faults", headers=AUTH).json()["burst_left"] == 0


def test_metrics_health_and_correlation_ids(billing_sim: BillingFactory) -> None:
    client, _ = billing_sim()
    client.post("/admin/faults", json={"burst": 1}, headers=AUTH)
    params = _item(unique_name("cust"))
    refused = client.post("/v1/invoiceitems", data=params, headers={"X-Correlation-Id": "corr-1"})
    created = client.post("/v1/invoiceitems", data=params, headers={"X-Correlation-Id": "corr-2"})

    assert refused.headers["X-Correlation-Id"] == "corr-1" and created.headers["X-Correlation-Id"] == "corr-2"
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert (
        'simulator_requests_total{outcome="injected_burst",route="/v1/invoiceitems",simulator="billing-sim"} 1.0'
        in metrics
    )
    assert 'simulator_documents_stored_total{kind="created",simulator="billing-sim"} 1.0' in metrics
    assert 'simulator_faults_injected_total{kind="burst",simulator="billing-sim"} 1.0' in metrics
    assert "simulator_request_seconds_bucket" in metrics


# --- the migration runner -------------------------------------------------------------------------


def _migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_migrations_apply_once_in_order_and_are_recorded(postgres_conninfo: str, tmp_path: Path) -> None:
    schema = _schema_name("mig")
    directory = _migrations(
        tmp_path / "m",
        {
            "0001_init.sql": "CREATE TABLE thing (id int PRIMARY KEY);\nINSERT INTO thing VALUES (1);",
            "0002_more.sql": "ALTER TABLE thing ADD COLUMN label text DEFAULT '100%';",
        },
    )
    try:
        assert apply_migrations(postgres_conninfo, schema, directory) == [1, 2]
        assert apply_migrations(postgres_conninfo, schema, directory) == []
        _migrations(directory, {"0003_index.sql": "CREATE INDEX thing_label ON thing (label);"})
        assert apply_migrations(postgres_conninfo, schema, directory) == [3]
        with psycopg.connect(postgres_conninfo) as conn:
            versions = conn.execute(f"SELECT version FROM {schema}.schema_migrations ORDER BY version").fetchall()
            labels = conn.execute(f"SELECT label FROM {schema}.thing").fetchall()
        assert [v for (v,) in versions] == [1, 2, 3] and labels == [("100%",)]
    finally:
        _drop(postgres_conninfo, schema)


def test_concurrent_runners_apply_each_version_once(postgres_conninfo: str, tmp_path: Path) -> None:
    schema = _schema_name("mig")
    directory = _migrations(tmp_path / "m", {"0001_init.sql": "CREATE TABLE thing (id int PRIMARY KEY);"})
    try:
        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(lambda _: apply_migrations(postgres_conninfo, schema, directory), range(5)))
        assert sorted(results) == [[], [], [], [], [1]]
    finally:
        _drop(postgres_conninfo, schema)


def test_an_edited_or_failing_migration_is_refused_and_leaves_nothing_half_done(
    postgres_conninfo: str, tmp_path: Path
) -> None:
    schema = _schema_name("mig")
    directory = _migrations(tmp_path / "m", {"0001_init.sql": "CREATE TABLE thing (id int PRIMARY KEY);"})
    try:
        apply_migrations(postgres_conninfo, schema, directory)
        _migrations(directory, {"0002_bad.sql": "CREATE TABLE other (id int);\nSELECT no_such_column FROM thing;"})
        with pytest.raises(MigrationError, match=r"0002_bad\.sql failed"):
            apply_migrations(postgres_conninfo, schema, directory)
        with psycopg.connect(postgres_conninfo) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.other",)).fetchone() == (None,)
        (directory / "0002_bad.sql").unlink()
        (directory / "0001_init.sql").write_text("CREATE TABLE thing (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            apply_migrations(postgres_conninfo, schema, directory)
    finally:
        _drop(postgres_conninfo, schema)


# --- the real entry point -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SimulatorProcess:
    """`backbone run <simulator> ...` as a child process on a free port, its output in a log file."""

    def __init__(self, argv: list[str], log_file: Path) -> None:
        self.port, self.log_file = _free_port(), log_file
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = log_file.open("w")
        self.process = subprocess.Popen(
            [BACKBONE, "run", *argv, "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(self._healthy, timeout=30, message=f"{argv[0]} answers /healthz")
        except BaseException:
            self.process.kill()
            self.process.wait(timeout=20)
            self._log.close()
            raise

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            assert self.process.poll() is None, self.log_file.read_text()
            return False

    def stop(self) -> int:
        """SIGTERM, and the exit status (0 is a clean stop)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self._log.close()


def test_backbone_run_billing_sim_serves_until_sigterm(postgres_conninfo: str, tmp_path: Path) -> None:
    schema = _schema_name("billing_cli")
    simulator = SimulatorProcess(["billing-sim", "--schema", schema, "--burst", "1"], tmp_path / "billing-sim.log")
    try:
        params = _item(unique_name("cust"))
        first = httpx.post(f"{simulator.base}/v1/invoiceitems", data=params, headers={"X-Correlation-Id": "corr-cli"})
        second = httpx.post(f"{simulator.base}/v1/invoiceitems", data=params)
        assert (first.status_code, second.status_code) == (503, 200)
    finally:
        assert simulator.stop() == 0
        _drop(postgres_conninfo, schema)
    logged = [json.loads(line) for line in simulator.log_file.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("correlation_id") == "corr-cli" and line.get("fault") == "burst" for line in logged), logged


def test_backbone_run_erp_sim_serves_a_named_instance_with_its_closed_periods(
    postgres_conninfo: str, tmp_path: Path
) -> None:
    name = unique_name("legacy-erp")
    argv = ["erp-sim", "--name", name, "--closed-before", "2026-01-01", "--project", "P-1", "--throttle", "1"]
    simulator = SimulatorProcess(argv, tmp_path / "erp-sim.log")
    try:
        lines = f"{simulator.base}/v1/journal-lines"
        throttled = httpx.post(lines, json=_line(unique_name("post")))
        closed = httpx.post(lines, json=_line(unique_name("post"), tranDate="2025-12-31"))
        unknown = httpx.post(lines, json=_line(unique_name("post"), project="P-9"))
        posted = httpx.post(lines, json=_line(unique_name("post")))
        assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "1")
        assert [(r.status_code, r.json()["code"]) for r in (closed, unknown)] == [
            (422, "PERIOD_CLOSED"),
            (422, "UNKNOWN_PROJECT"),
        ]
        assert posted.status_code == 201 and posted.json()["erp"] == name
        assert _count(postgres_conninfo, "erp_sim_" + name.replace("-", "_"), "journal_lines") == 1
    finally:
        assert simulator.stop() == 0
        _drop(postgres_conninfo, "erp_sim_" + name.replace("-", "_"))
