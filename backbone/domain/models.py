"""The canonical model: every event backbone carries, as frozen pydantic models.

These classes are the contract between systems (see docs/canonical-model.md). Connectors map their
payloads into them, processors and sinks read them, and `backbone.kafka.wire` is the only place that turns
them into Avro records and back. JSON input follows the contract's conventions: money, rates,
percentages and hours are decimal *strings* (a JSON float is rejected, never rounded), dates are
`YYYY-MM-DD`, instants are RFC 3339 in UTC, enums are UPPER_SNAKE strings.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import MAX_PREC, Context, Decimal, InvalidOperation, Rounded
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from annotated_types import Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
)

DECIMAL_SCALE = 4
"""Every decimal travels with scale 4 (enough for every ISO 4217 currency)."""
DECIMAL_PRECISION = 18
"""Digits the Avro schemas give every decimal: 14 before the point, 4 after."""
DECIMAL_LIMIT = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
"""Ranges of Avro's `int` and `long`: a model refuses what its schema could not carry."""
ID_MAX_LENGTH = 512

# ASCII digits only: Python's Decimal also reads Arabic-Indic digits, underscores and surrounding spaces.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _decimal_from_text(value: Any) -> Any:
    if type(value) is Decimal:  # what every decoded record holds: no conversion to choose
        return value
    if isinstance(value, float):
        raise ValueError(
            'money, rates and percentages must be decimal strings like "150.00", not JSON numbers with a fraction'
        )
    if isinstance(value, bool):
        raise ValueError("expected a decimal string, got a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError(f'{value[:40]!r} is not a decimal number in ASCII digits like "150.00"')
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value[:40]!r} is not a decimal number") from None
    return value


_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_EXACT = Context(prec=MAX_PREC, traps=[Rounded])
"""Quantizing to 4 places signals Rounded exactly when the value has more than 4 (even zeros, as
`1.50000`): a check in C instead of building `as_tuple()`'s digits for every decimal of every event."""


def _fits_scale(value: Decimal) -> Decimal:
    try:
        value.quantize(_QUANTUM, context=_EXACT)  # infinities and NaN quietly give NaN: they pass, as before
    except Rounded:
        raise ValueError(f"{value} has more than {DECIMAL_SCALE} decimal places") from None
    if not value and value.is_finite() and value.adjusted() < -DECIMAL_SCALE:
        # a zero rounds nothing away; its adjusted exponent is its exponent (0E-10, 0.00000)
        raise ValueError(f"{value} has more than {DECIMAL_SCALE} decimal places")
    if abs(value) >= DECIMAL_LIMIT:
        raise ValueError(
            f"{value} is out of range: at most {DECIMAL_PRECISION - DECIMAL_SCALE} digits before the point"
        )
    return value


Dec = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_text),
    AfterValidator(_fits_scale),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]
"""A decimal that arrives and leaves as a string; at most 4 decimal places."""


def _instant_from_text(value: Any) -> Any:
    if type(value) is datetime:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('instants are RFC 3339 strings like "2026-11-02T09:30:00Z", not numbers')
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # decoded instants already are
        return value
    if value.tzinfo is None:
        raise ValueError("instants need a time zone, e.g. 2026-11-02T09:30:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range in UTC (years 1 to 9999)") from None


def _rfc3339(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


Instant = Annotated[
    datetime,
    BeforeValidator(_instant_from_text),
    AfterValidator(_utc),
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
]
"""An RFC 3339 instant, normalised to UTC; printed with a trailing Z."""

CURRENCY_PATTERN = r"^[A-Z]{3}$"
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN, description="ISO 4217 code")]
_NOT_IN_IDS = "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
ID_PATTERN = f"^[^{_NOT_IN_IDS}]*[^\\s{_NOT_IN_IDS}][^{_NOT_IN_IDS}]*$"
"""Not blank; no control character (NUL included), line separator or bidirectional override, which would
let an id look like another in a log, a terminal or an invoice."""
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
NonEmpty = Id
"""An identifier or name that must be present (kept as an alias of `Id`)."""
# Upper bounds only: each field states its own lower bound (`Field(ge=1)`), which an inner one would override.
Int32 = Annotated[StrictInt, Le(INT32_MAX)]
Int64 = Annotated[StrictInt, Le(INT64_MAX)]


class ProjectStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    CLOSED = "CLOSED"


class BillingType(StrEnum):
    TIME_AND_MATERIALS = "TIME_AND_MATERIALS"
    FIXED_FEE = "FIXED_FEE"
    NON_BILLABLE = "NON_BILLABLE"


class EmploymentType(StrEnum):
    EMPLOYEE = "EMPLOYEE"
    CONTRACTOR = "CONTRACTOR"


class ContractStatus(StrEnum):
    ACTIVE = "ACTIVE"
    TERMINATED = "TERMINATED"


class RoundingMode(StrEnum):
    NEAREST = "NEAREST"
    UP = "UP"
    DOWN = "DOWN"


class Decision(StrEnum):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class CandidateKind(StrEnum):
    TIME = "TIME"
    ADJUSTMENT = "ADJUSTMENT"
    REVERSAL = "REVERSAL"


class PostingType(StrEnum):
    COST = "COST"
    REVENUE = "REVENUE"


class PostingStatus(StrEnum):
    POSTED = "POSTED"
    REJECTED = "REJECTED"


class BillingStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class ExceptionKind(StrEnum):
    UNKNOWN_WORKER = "UNKNOWN_WORKER"
    UNKNOWN_PROJECT = "UNKNOWN_PROJECT"
    PROJECT_NOT_ACTIVE = "PROJECT_NOT_ACTIVE"
    NO_CONTRACT = "NO_CONTRACT"
    NO_RATE = "NO_RATE"
    MISSING_TAX_CODE = "MISSING_TAX_CODE"
    CAP_EXCEEDED = "CAP_EXCEEDED"
    BILLING_REJECTED = "BILLING_REJECTED"
    POSTING_REJECTED = "POSTING_REJECTED"
    POSTING_ACK_TIMEOUT = "POSTING_ACK_TIMEOUT"
    INVOICED_AT_SOURCE = "INVOICED_AT_SOURCE"


class ExceptionStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


class SubjectType(StrEnum):
    TIME_ENTRY = "TIME_ENTRY"
    CANDIDATE = "CANDIDATE"
    POSTING = "POSTING"


class Owner(StrEnum):
    FINANCE_OPS = "FINANCE_OPS"
    PMO = "PMO"
    MASTER_DATA = "MASTER_DATA"


class Canonical(BaseModel):
    """Base of every canonical record: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    shared_values: ClassVar[frozenset[str]] = frozenset()
    """Fields whose values repeat across many records (a currency, a role, a rate, a whole rate card).
    The compiled Avro readers give every record one shared copy of each such value, so master data kept
    in every topology worker is not a copy per record (backbone/kafka/compiled.py;
    docs/topology-performance.md, "Seventh session")."""


class Event(Canonical):
    """The envelope every event carries. `event_type` names it on the CLI, in headers and the catalog."""

    event_type: ClassVar[str]
    key_field: ClassVar[str]

    event_id: NonEmpty | None = Field(
        default=None,
        description="Unique id; a second event with the same id is a duplicate. Derived from the payload when omitted.",
    )
    occurred_at: Instant = Field(description="Business time of the change in the source system.")
    source_system: NonEmpty = Field(description="e.g. harvest, toggl, clockify, netsuite, erp-sim, backbone")
    correlation_id: Id | None = Field(
        default=None, description="Follows one time entry end to end; defaults to its time_entry_id."
    )

    @property
    def key(self) -> str:
        """The Kafka record key the catalog names for this event type."""
        return str(getattr(self, self.key_field))


# --- reference data -----------------------------------------------------------------------------


class Client(Event):
    event_type: ClassVar[str] = "client"
    key_field: ClassVar[str] = "client_id"
    shared_values: ClassVar[frozenset[str]] = frozenset({"occurred_at", "source_system", "billing_entity", "currency"})

    client_id: NonEmpty
    name: str
    billing_entity: str = Field(description="Legal entity that invoices this client.")
    currency: Currency
    active: StrictBool


class Project(Event):
    event_type: ClassVar[str] = "project"
    key_field: ClassVar[str] = "project_id"
    shared_values: ClassVar[frozenset[str]] = frozenset(
        {"occurred_at", "source_system", "client_id", "currency", "business_unit", "region", "legal_entity"}
    )

    project_id: NonEmpty
    client_id: NonEmpty
    name: str
    code: str | None = Field(default=None, description="External project code.")
    status: ProjectStatus
    billing_type: BillingType
    currency: Currency
    business_unit: str
    region: str
    legal_entity: str


class Worker(Event):
    event_type: ClassVar[str] = "worker"
    key_field: ClassVar[str] = "worker_id"
    shared_values: ClassVar[frozenset[str]] = frozenset(
        {"occurred_at", "source_system", "role", "cost_rate", "cost_currency"}
    )

    worker_id: NonEmpty
    name: str
    email: str | None = None
    role: str
    employment_type: EmploymentType
    cost_rate: Dec = Field(description="Cost per hour in cost_currency.")
    cost_currency: Currency
    active: StrictBool


class RateCardLine(Canonical):
    """One line of a contract's rate card; unset selectors match anything."""

    shared_values: ClassVar[frozenset[str]] = frozenset({"role", "hourly_rate"})

    worker_id: str | None = None
    role: str | None = None
    task_id: Id | None = None
    hourly_rate: Dec


class ContractVersion(Event):
    event_type: ClassVar[str] = "contract"
    key_field: ClassVar[str] = "contract_key"
    shared_values: ClassVar[frozenset[str]] = frozenset(
        {
            "occurred_at",
            "source_system",
            "effective_from",
            "effective_to",
            "currency",
            "tax_code",
            "discount_percent",
            "not_to_exceed",
            "default_hourly_rate",
            "rate_card",
        }
    )

    contract_id: NonEmpty
    version: Int32 = Field(ge=1, description="Amendment number; a higher version wins on the dates it covers.")
    project_id: NonEmpty
    status: ContractStatus
    effective_from: date
    effective_to: date | None = Field(
        default=None, description="Last covered work date, inclusive; open-ended when null."
    )
    currency: Currency
    tax_code: str | None = None
    discount_percent: Dec = Decimal("0")
    not_to_exceed: Dec | None = None
    rounding_increment_minutes: Int32 = Field(default=1, ge=1)
    rounding_mode: RoundingMode = RoundingMode.NEAREST
    default_hourly_rate: Dec | None = None
    rate_card: tuple[RateCardLine, ...] = ()

    @property
    def contract_key(self) -> str:
        return f"{self.contract_id}:{self.version}"


# --- time capture --------------------------------------------------------------------------------


class TimeEntry(Event):
    event_type: ClassVar[str] = "time-entry"
    key_field: ClassVar[str] = "time_entry_id"

    time_entry_id: NonEmpty
    revision: Int32 = Field(ge=1)
    worker_id: NonEmpty
    project_id: NonEmpty
    task_id: Id | None = None
    work_date: date
    duration_seconds: Int64 = Field(ge=0)
    billable: StrictBool
    notes: str | None = None
    deleted: StrictBool = False
    invoiced_at_source: StrictBool | None = None
    """True: the source already invoiced this entry, so backbone never bills it (billing-rules.md §2)."""
    source_invoice_id: str | None = None


class ApprovalDecision(Event):
    event_type: ClassVar[str] = "approval"
    key_field: ClassVar[str] = "time_entry_id"

    time_entry_id: NonEmpty
    revision: Int32 = Field(ge=1)
    decision: Decision
    approver_id: NonEmpty
    decided_at: Instant
    comment: str | None = None


# --- what the backbone produces -----------------------------------------------------------------


class InvoiceCandidate(Event):
    event_type: ClassVar[str] = "invoice-candidate"
    key_field: ClassVar[str] = "project_id"

    candidate_id: NonEmpty
    kind: CandidateKind
    time_entry_id: NonEmpty
    revision: Int32 = Field(ge=1)
    project_id: NonEmpty
    client_id: NonEmpty
    worker_id: NonEmpty
    role: str | None = None
    task_id: Id | None = None
    work_date: date
    contract_id: NonEmpty
    contract_version: Int32 = Field(ge=1)
    billable_minutes: Int64
    hourly_rate: Dec
    discount_percent: Dec
    amount: Dec
    currency: Currency
    tax_code: str | None = None
    billing_entity: str | None = None
    replaces_candidate_id: str | None = None
    capped: StrictBool = False


class PostingRequest(Event):
    event_type: ClassVar[str] = "posting-request"
    key_field: ClassVar[str] = "project_id"

    posting_id: NonEmpty
    posting_type: PostingType
    time_entry_id: NonEmpty
    revision: Int32 = Field(ge=1)
    project_id: NonEmpty
    worker_id: NonEmpty
    work_date: date
    amount: Dec
    currency: Currency
    erp_target: NonEmpty
    reverses_posting_id: str | None = None


class PostingAck(Event):
    event_type: ClassVar[str] = "posting-ack"
    key_field: ClassVar[str] = "posting_id"

    posting_id: NonEmpty
    erp_target: NonEmpty
    status: PostingStatus
    erp_document_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    project_id: str | None = None
    amount: Dec | None = None
    currency: Currency | None = None


class BillingResponse(Event):
    event_type: ClassVar[str] = "billing-response"
    key_field: ClassVar[str] = "candidate_id"

    candidate_id: NonEmpty
    status: BillingStatus
    invoice_id: str | None = None
    reason_code: str | None = None
    message: str | None = None
    project_id: str | None = None
    amount: Dec | None = None
    currency: Currency | None = None
    time_entry_id: str | None = None


class BusinessException(Event):
    event_type: ClassVar[str] = "exception"
    key_field: ClassVar[str] = "exception_id"

    exception_id: NonEmpty
    kind: ExceptionKind
    status: ExceptionStatus
    subject_type: SubjectType
    subject_id: NonEmpty
    project_id: str | None = None
    owner: Owner
    amount_at_risk: Dec | None = None
    currency: Currency | None = None
    details: str
    opened_at: Instant
    resolved_at: Instant | None = None


INPUT_EVENTS: dict[str, type[Event]] = {
    cls.event_type: cls for cls in (Client, Project, Worker, ContractVersion, TimeEntry, ApprovalDecision)
}
"""Event types systems publish (the names `backbone emit` takes)."""

OUTPUT_EVENTS: dict[str, type[Event]] = {
    cls.event_type: cls for cls in (InvoiceCandidate, PostingRequest, PostingAck, BillingResponse, BusinessException)
}
"""Event types the backbone and its system connectors produce."""

ALL_EVENTS: dict[str, type[Event]] = {**INPUT_EVENTS, **OUTPUT_EVENTS}
