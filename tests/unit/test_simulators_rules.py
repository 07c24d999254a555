"""The simulators' pure parts: Stripe's idempotency decisions, minor units, the fault schedule, the
billing parameters and the ERP's validation rules."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from backbone.domain.money import minor_units
from consumers.simulators.amounts import (
    AmountError,
    fits_currency,
    from_minor_units,
    minor_units_text,
    parse_decimal,
    to_minor_units,
)
from consumers.simulators.billing import StripeProblem, invoice_item_params, parse_params
from consumers.simulators.erp import ErpProblem, JournalLineIn, business_problem, content_hash, parse_line
from consumers.simulators.faults import FaultPlan, FaultSchedule
from consumers.simulators.idempotency import Decision, StoredRequest, decide, fingerprint, key_problem
from consumers.simulators.settings import BillingSimSettings, ErpSimSettings, settings_from_flags

# --- idempotency ----------------------------------------------------------------------------------

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
PRINT = fingerprint("POST", "/v1/invoiceitems", {"amount": 1500, "currency": "eur"})


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(None, Decision.EXECUTE, id="a-new-key-runs"),
        pytest.param(StoredRequest(PRINT, NOW - timedelta(minutes=5)), Decision.REPLAY, id="same-request-replays"),
        pytest.param(StoredRequest("other", NOW - timedelta(minutes=5)), Decision.MISMATCH, id="other-params-refused"),
        pytest.param(StoredRequest("other", NOW - DAY), Decision.EXECUTE, id="an-expired-key-runs-again"),
        pytest.param(StoredRequest(PRINT, NOW - DAY + timedelta(seconds=1)), Decision.REPLAY, id="kept-24-hours"),
    ],
)
def test_a_key_decides_between_running_replaying_and_refusing(stored: StoredRequest | None, expected: Decision) -> None:
    assert decide(stored, PRINT, NOW, DAY) is expected


def test_the_fingerprint_ignores_parameter_order_but_not_values_or_endpoint() -> None:
    a = fingerprint("POST", "/v1/invoiceitems", {"amount": 1500, "metadata": {"a": "1", "b": "2"}})
    b = fingerprint("post", "/v1/invoiceitems", {"metadata": {"b": "2", "a": "1"}, "amount": 1500})
    assert a == b
    assert a != fingerprint("POST", "/v1/invoiceitems", {"amount": 1501, "metadata": {"a": "1", "b": "2"}})
    assert a != fingerprint("POST", "/v1/invoices", {"amount": 1500, "metadata": {"a": "1", "b": "2"}})


def _standard_library_fingerprint(method: str, path: str, params: dict[str, object]) -> str:
    """The fingerprint as the simulator first computed it, which the keys already stored carry."""
    canonical = json.dumps([method.upper(), path, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"amount": -1500, "metadata": {"b": "2", "a": "1"}, "description": None}, id="plain-ascii"),
        pytest.param({"description": 'quote " backslash \\ slash /'}, id="escaped-ascii"),
        pytest.param({"description": "".join(map(chr, range(32)))}, id="control-characters"),
        pytest.param({"description": "delete \x7f"}, id="delete-character"),
        pytest.param({"description": "Zürich — 東京 😀"}, id="non-ascii-text"),
        pytest.param({"metadata": {"é": "1", "z": "2", "e": "3"}}, id="non-ascii-keys-sorted"),
        pytest.param({"work_date": date(2026, 1, 31)}, id="a-date-by-its-text"),
    ],
)
def test_the_fingerprint_is_the_one_already_stored_with_keys(params: dict[str, object]) -> None:
    assert fingerprint("post", "/v1/invoiceitems", params) == _standard_library_fingerprint(
        "post", "/v1/invoiceitems", params
    )


@pytest.mark.parametrize(
    ("key", "usable"),
    [("k-1", True), ("", False), ("   ", False), ("x" * 255, True), ("x" * 256, False)],
    ids=["plain", "empty", "blank", "255-chars", "256-chars"],
)
def test_idempotency_keys_are_non_blank_and_at_most_255_characters(key: str, usable: bool) -> None:
    assert (key_problem(key) is None) is usable


# --- minor units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [
        pytest.param("150.00", "EUR", 15000, id="eur-cents"),
        pytest.param("-12.34", "usd", -1234, id="negative-credit-lowercase"),
        pytest.param("1500", "JPY", 1500, id="jpy-has-no-minor-unit"),
        pytest.param("12.345", "KWD", 12345, id="kwd-has-three"),
        pytest.param("0.001", "BHD", 1, id="bhd-has-three"),
        pytest.param("7.5", "EUR", 750, id="fewer-places-than-allowed"),
        pytest.param("0", "CLF", 0, id="zero"),
    ],
)
def test_amounts_convert_exactly_to_minor_units_and_back(amount: str, currency: str, units: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == units
    assert from_minor_units(units, currency) == Decimal(amount)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("1.5", "JPY"), ("0.001", "EUR"), ("1.2345", "KWD")],
    ids=["half-yen", "tenth-of-a-cent", "four-places-of-dinar"],
)
def test_an_amount_finer_than_the_currency_is_refused_never_rounded(amount: str, currency: str) -> None:
    with pytest.raises(AmountError):
        to_minor_units(Decimal(amount), currency)
    assert not fits_currency(Decimal(amount), currency)


@pytest.mark.parametrize("currency", ["EUR", "eur", "JPY", "KWD"])
def test_the_text_of_minor_units_is_that_of_the_decimal_amount(currency: str) -> None:
    samples = [0, 1, -1, 5, -5, 99, -99, 100, -100, 101, 1500, -1500, 123456, 10**15 - 1, -(10**15 - 1)]
    assert [minor_units_text(units, currency) for units in samples] == [
        str(from_minor_units(units, currency)) for units in samples
    ]
    with pytest.raises(AmountError):
        minor_units_text(1, "EURO")


def test_from_minor_units_shows_exactly_the_currency_places() -> None:
    assert str(from_minor_units(-5, "EUR")) == "-0.05"
    assert str(from_minor_units(5, "KWD")) == "0.005"
    assert str(from_minor_units(5, "JPY")) == "5"


@pytest.mark.parametrize("text", ["1e3", "12,50", "", " 1", "1.23456", "NaN"])
def test_only_plain_decimal_strings_are_amounts(text: str) -> None:
    with pytest.raises(AmountError):
        parse_decimal(text)


# --- the fault schedule ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_fails_the_next_n_requests_then_heals() -> None:
    schedule = FaultSchedule(FaultPlan(burst=3, burst_status=502), clock=FakeClock())
    kinds = [schedule.decide() for _ in range(5)]
    assert [(d.kind, d.status) for d in kinds] == [("burst", 502)] * 3 + [("none", 200)] * 2


def test_an_outage_refuses_everything_until_its_window_ends_and_says_how_long() -> None:
    clock = FakeClock()
    schedule = FaultSchedule(FaultPlan(outage_s=10, burst=1), clock=clock)
    first = schedule.decide()
    assert (first.kind, first.status, first.retry_after_s) == ("outage", 503, 10)
    clock.now += 9.5
    assert schedule.decide().retry_after_s == 1
    clock.now += 0.5
    assert schedule.decide().kind == "burst"  # the burst waits behind the outage
    assert schedule.decide().kind == "none"


def test_throttled_requests_carry_retry_after() -> None:
    schedule = FaultSchedule(FaultPlan(throttle=2, retry_after_s=7), clock=FakeClock())
    decisions = [schedule.decide() for _ in range(3)]
    assert [(d.status, d.retry_after_s) for d in decisions] == [(429, 7), (429, 7), (200, None)]


def test_a_poisoned_record_fails_every_time_and_the_others_go_through() -> None:
    schedule = FaultSchedule(FaultPlan(poison="cand-7"), clock=FakeClock())
    about_it = [schedule.decide(("cand-7", "TE-7")) for _ in range(5)]
    assert {(d.kind, d.status) for d in about_it} == {("poison", 500)}
    assert schedule.decide(("", "about-cand-7")).kind == "poison"  # matched in the correlation id too
    assert schedule.decide(("cand-9", "TE-9")).kind == "none"
    assert schedule.decide(()).kind == "none"


def test_random_faults_repeat_exactly_with_a_seed() -> None:
    plan = FaultPlan(error_rate=0.3, throttle_rate=0.2, seed=42)
    first, second = (FaultSchedule(plan, clock=FakeClock()) for _ in range(2))
    sequence = [first.decide().kind for _ in range(200)]
    assert sequence == [second.decide().kind for _ in range(200)]
    errors, throttles = sequence.count("error"), sequence.count("throttle")
    assert 20 < throttles < 60 and 30 < errors < 80  # about 20 % and 30 % of the remaining 80 %


def test_replacing_the_plan_restarts_counters_and_reseeds() -> None:
    schedule = FaultSchedule(FaultPlan(error_rate=0.5, seed=1), clock=FakeClock())
    before = [schedule.decide().kind for _ in range(20)]
    schedule.replace(FaultPlan(error_rate=0.5, seed=1))
    assert [schedule.decide().kind for _ in range(20)] == before
    schedule.replace(FaultPlan())
    assert all(schedule.decide().kind == "none" for _ in range(50))


def test_delays_accompany_every_decision() -> None:
    schedule = FaultSchedule(FaultPlan(latency_ms=250, slow_first_byte_ms=1500), clock=FakeClock())
    decision = schedule.decide()
    assert (decision.kind, decision.delay_s, decision.first_byte_delay_s) == ("none", 0.25, 1.5)


def test_the_state_reports_what_is_left() -> None:
    clock = FakeClock()
    schedule = FaultSchedule(FaultPlan(burst=2, outage_s=5), clock=clock)
    clock.now += 2
    state = schedule.state()
    assert (state["burst_left"], state["outage_remaining_s"]) == (2, 3.0)


# --- billing parameters ---------------------------------------------------------------------------

ITEM = {
    "customer": "C-1",
    "amount": "15000",
    "currency": "eur",
    "tax_code": "txcd_10000000",
    "metadata": {"work_date": "2026-11-03", "candidate_id": "cand-1"},
}


def test_form_encoding_nests_one_level_like_stripe() -> None:
    body = b"customer=C-1&amount=-1500&metadata%5Bwork_date%5D=2026-11-03&period%5Bstart%5D=1"
    assert parse_params(body, "application/x-www-form-urlencoded") == {
        "customer": "C-1",
        "amount": "-1500",
        "metadata": {"work_date": "2026-11-03"},
        "period": {"start": "1"},
    }


def test_form_and_json_spellings_of_an_item_are_the_same_request() -> None:
    from_form = invoice_item_params(ITEM)
    from_json = invoice_item_params({**ITEM, "amount": 15000})
    assert from_form == from_json and from_form.canonical() == from_json.canonical()
    assert from_form.period == "2026-11"


def test_the_work_date_falls_back_to_the_period_start() -> None:
    params = {**ITEM, "metadata": {}, "period": {"start": "1767225600", "end": "1767225600"}}  # 2026-01-01
    assert invoice_item_params(params).period == "2026-01"


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        pytest.param({"tax_code": None}, "tax_code_missing", "tax_code", id="no-tax-code"),
        pytest.param({"tax_code": " "}, "tax_code_missing", "tax_code", id="blank-tax-code"),
        pytest.param({"amount": "150.00"}, "parameter_invalid_integer", "amount", id="decimal-amount"),
        pytest.param({"amount": 150.0}, "parameter_invalid_integer", "amount", id="float-amount"),
        pytest.param({"amount": True}, "parameter_invalid_integer", "amount", id="boolean-amount"),
        pytest.param({"amount": None}, "parameter_missing", "amount", id="no-amount"),
        pytest.param({"currency": "EUR"}, "parameter_invalid", "currency", id="uppercase-currency"),
        pytest.param({"customer": None}, "parameter_missing", "customer", id="no-customer"),
        pytest.param({"metadata": {}}, "parameter_missing", "period[start]", id="no-work-date"),
        pytest.param({"colour": "red"}, "parameter_unknown", "colour", id="unknown-parameter"),
    ],
)
def test_invalid_items_are_refused_with_stripe_codes(change: dict[str, object], code: str, param: str) -> None:
    params = {k: v for k, v in {**ITEM, **change}.items() if v is not None}
    with pytest.raises(StripeProblem) as refused:
        invoice_item_params(params)
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, code, param)


# --- ERP validation -------------------------------------------------------------------------------

LINE = {
    "externalId": "post-1",
    "type": "COST",
    "project": "P-1",
    "worker": "W-1",
    "tranDate": "2026-02-10",
    "amount": "-150.00",
    "currency": "EUR",
}


def _line(**change: object) -> bytes:
    import json

    return json.dumps({k: v for k, v in {**LINE, **change}.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param({"amount": -150.0}, "INVALID_REQUEST", id="json-number-amount"),
        pytest.param({"amount": "1.005"}, "INVALID_AMOUNT", id="finer-than-cents"),
        pytest.param({"amount": "12.5", "currency": "JPY"}, "INVALID_AMOUNT", id="fractional-yen"),
        pytest.param({"type": "SALES"}, "INVALID_REQUEST", id="unknown-type"),
        pytest.param({"tranDate": "10/02/2026"}, "INVALID_REQUEST", id="not-iso-date"),
        pytest.param({"externalId": None}, "INVALID_REQUEST", id="no-external-id"),
        pytest.param({"currency": "eur"}, "INVALID_REQUEST", id="lowercase-currency"),
    ],
)
def test_malformed_lines_are_400_with_a_code(change: dict[str, object], code: str) -> None:
    with pytest.raises(ErpProblem) as refused:
        parse_line(_line(**change))
    assert (refused.value.status, refused.value.code) == (400, code)


@pytest.mark.parametrize(
    ("settings", "change", "code"),
    [
        pytest.param({"closed_before": date(2026, 3, 1)}, {}, "PERIOD_CLOSED", id="before-the-closing-date"),
        pytest.param({"closed_periods": {"2026-02"}}, {}, "PERIOD_CLOSED", id="a-closed-month"),
        pytest.param({"closed_before": date(2026, 2, 10)}, {}, None, id="the-closing-date-itself-is-open"),
        pytest.param({"projects": {"P-2"}}, {}, "UNKNOWN_PROJECT", id="not-on-the-allow-list"),
        pytest.param({"projects": {"P-1"}}, {}, None, id="on-the-allow-list"),
        pytest.param({"reject_project_pattern": "^P-"}, {}, "UNKNOWN_PROJECT", id="matches-the-reject-pattern"),
        pytest.param({"cost_centres": {"CC-1"}}, {"costCentre": "CC-9"}, "UNKNOWN_COST_CENTRE", id="cost-centre"),
        pytest.param({"cost_centres": {"CC-1"}}, {"costCentre": "CC-1"}, None, id="known-cost-centre"),
        pytest.param({}, {"costCentre": "CC-9"}, None, id="any-cost-centre-without-a-list"),
    ],
)
def test_business_rules_refuse_with_422_codes(
    settings: dict[str, object], change: dict[str, object], code: str | None
) -> None:
    line, _ = parse_line(_line(**change))
    problem = business_problem(line, ErpSimSettings(name="t", **settings))  # type: ignore[arg-type]
    assert (problem.code if problem else None) == code
    assert problem is None or problem.status == 422


def test_the_same_amount_written_differently_is_the_same_content() -> None:
    a, amount_a = parse_line(_line(amount="-150.00"))
    b, amount_b = parse_line(_line(amount="-150.0"))
    c, amount_c = parse_line(_line(amount="-150.01"))
    assert content_hash(a, amount_a) == content_hash(b, amount_b) != content_hash(c, amount_c)


def _model_content_hash(line: JournalLineIn, amount: Decimal) -> str:
    """The content hash as the simulator first computed it, which the lines already stored carry."""
    content = line.model_dump(mode="json", exclude={"external_id"})
    content["amount"] = str(amount.quantize(Decimal(1).scaleb(-minor_units(line.currency))))
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({}, id="plain"),
        pytest.param({"amount": "-150.5", "costCentre": "CC-1", "reversesExternalId": "post-0"}, id="every-field"),
        pytest.param({"memo": 'Zürich — 東京 😀 "quoted" \\ \x7f \n'}, id="escapes-and-non-ascii"),
        pytest.param({"currency": "JPY", "amount": "150"}, id="no-decimals"),
        pytest.param({"currency": "KWD", "amount": "1.5"}, id="three-decimals"),
    ],
)
def test_the_content_hash_is_the_one_already_stored_with_lines(change: dict[str, object]) -> None:
    line, amount = parse_line(_line(**change))
    assert content_hash(line, amount) == _model_content_hash(line, amount)


@pytest.mark.parametrize(
    ("amount", "currency", "fits"),
    [
        ("150", "EUR", True),
        ("150.50", "EUR", True),
        ("150.500", "EUR", True),
        ("150.505", "EUR", False),
        ("1.5", "JPY", False),
        ("1.0", "JPY", True),
        ("0.001", "KWD", True),
        ("1E+3", "EUR", True),
    ],
)
def test_an_amount_fits_its_currency_when_exact_in_its_minor_units(amount: str, currency: str, fits: bool) -> None:
    assert fits_currency(Decimal(amount), currency) is fits


# --- settings -------------------------------------------------------------------------------------


def test_flags_override_the_environment_and_touch_only_the_given_fault_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKBONE_BILLING_SIM_FAULTS__LATENCY_MS", "40")
    monkeypatch.setenv("BACKBONE_BILLING_SIM_PORT", "9999")
    settings = settings_from_flags(BillingSimSettings, {"port": 8123, "burst": 2, "seed": None, "error_rate": None})
    assert settings.port == 8123
    assert (settings.faults.latency_ms, settings.faults.burst, settings.faults.error_rate) == (40, 2, 0.0)


def test_an_instance_name_gives_its_schema() -> None:
    assert ErpSimSettings(name="legacy-erp").db_schema == "erp_sim_legacy_erp"
    with pytest.raises(ValueError):
        ErpSimSettings(name="Legacy ERP")
