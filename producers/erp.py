"""ERP master data (clients, projects, workers, contracts) from CSV or JSON exports to canonical events.

Exports from NetSuite (saved searches, REST records with `{"id", "refName"}` references, `items` lists)
and Dynamics 365 (data entities, OData `value` lists) name the same facts differently: `companyName`
vs `CustomerAccount`, `isInactive` vs `Status`, `jobBillingType` vs `ProjectContractType`. Each
canonical field therefore has a list of accepted source names (`ALIASES`), compared without case,
spaces or punctuation, and each enum a table of source values (`*_VALUES`). A required field no alias
finds can be given on the command line (`--set region=EMEA`); otherwise the record is rejected with
its place and the names that were tried.

Contracts: a CSV has one row per rate-card line, grouped by (contract id, version); JSON nests the
lines (`rate_card`, `rateCard`, `lines`) and may list `amendments` (each a later version that inherits
the contract's fields and overrides what it names). A version with any bad line is rejected whole:
half a rate card would price work wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from backbone.domain.models import (
    BillingType,
    Client,
    ContractStatus,
    ContractVersion,
    EmploymentType,
    Event,
    Project,
    ProjectStatus,
    RateCardLine,
    RoundingMode,
    Worker,
)
from producers.parsing import (
    CsvRow,
    FieldError,
    Outcome,
    Parsed,
    ReadOptions,
    Rejection,
    decimal_of,
    describe_error,
    is_json_file,
    parse_bool,
    parse_currency,
    parse_date,
    parse_instant,
    read_json_records,
    read_table,
    text_of,
)

Kind = Literal["clients", "projects", "workers", "contracts"]
KINDS: tuple[Kind, ...] = ("clients", "projects", "workers", "contracts")
LIST_KEYS = ("items", "value", "records", "data", "clients", "projects", "workers", "contracts")

ALIASES: dict[str, tuple[str, ...]] = {
    "client_id": ("client_id", "externalId", "CustomerAccount", "customerId", "accountNumber", "internalId", "id"),
    "client_name": ("name", "companyName", "customerName", "OrganizationName", "CustomerName"),
    "billing_entity": ("billing_entity", "subsidiary", "legalEntity", "dataAreaId", "company", "InvoiceAccountCompany"),
    "currency": ("currency", "currencyCode", "SalesCurrencyCode", "ProjectCurrency"),
    "project_id": ("project_id", "externalId", "ProjectID", "projectNumber", "internalId", "id"),
    "project_client_id": ("client_id", "customer", "CustomerAccount", "customerId", "parent"),
    "project_name": ("name", "projectName", "companyName", "jobName", "ProjectName"),
    "code": ("code", "projectCode", "entityId", "entityNumber"),
    "project_status": ("status", "entityStatus", "projectStage", "stage", "projectStatus"),
    "billing_type": ("billing_type", "jobBillingType", "ProjectContractType", "projectType", "billingMethod"),
    "business_unit": ("business_unit", "department", "OperatingUnit", "ProjectGroup", "businessUnit"),
    "region": ("region", "location", "class", "Region"),
    "legal_entity": ("legal_entity", "subsidiary", "dataAreaId", "legalEntity", "company"),
    "worker_id": ("worker_id", "externalId", "PersonnelNumber", "employeeId", "resourceId", "internalId", "id"),
    "worker_name": ("name", "fullName", "Name", "altName"),
    "first_name": ("firstName", "first_name", "FirstName"),
    "last_name": ("lastName", "last_name", "LastName"),
    "email": ("email", "PrimaryContactEmail", "emailAddress"),
    "role": ("role", "title", "jobTitle", "resourceRole", "position", "Role"),
    "employment_type": ("employment_type", "employeeType", "workerType", "type", "employmentType"),
    "cost_rate": ("cost_rate", "laborCost", "hourlyCost", "costPrice", "costRate"),
    "cost_currency": ("cost_currency", "currency", "currencyCode", "costCurrency"),
    "inactive": ("isInactive", "inactive", "blocked"),
    "active": ("active", "isActive"),
    "modified": ("lastModifiedDate", "ModifiedDateTime", "lastModified", "updated_at", "modifiedOn", "occurred_at"),
    "contract_id": ("contract_id", "projectContractId", "contractNumber", "externalId", "contractId", "id"),
    "version": ("version", "amendment", "amendmentNumber", "revision"),
    "contract_project_id": ("project_id", "project", "ProjectID", "job", "projectId"),
    "contract_status": ("status", "contractStatus"),
    "effective_from": ("effective_from", "startDate", "validFrom", "effectiveFrom"),
    "effective_to": ("effective_to", "endDate", "validTo", "effectiveTo"),
    "tax_code": ("tax_code", "taxCode", "SalesTaxGroup", "taxSchedule", "ItemSalesTaxGroup"),
    "discount_percent": ("discount_percent", "discountPercent", "discount", "discountPct"),
    "not_to_exceed": ("not_to_exceed", "notToExceed", "notToExceedAmount", "nte", "cap"),
    "rounding_increment_minutes": ("rounding_increment_minutes", "roundingIncrementMinutes", "roundingIncrement"),
    "rounding_mode": ("rounding_mode", "roundingMode"),
    "default_hourly_rate": ("default_hourly_rate", "defaultHourlyRate", "defaultRate"),
    "line_worker_id": ("rate_worker_id", "line_worker_id", "worker_id", "worker", "workerId", "employee"),
    "line_role": ("rate_role", "line_role", "role", "resourceRole"),
    "line_task_id": ("rate_task_id", "line_task_id", "task_id", "task", "taskId", "caseTaskEvent"),
    "hourly_rate": ("hourly_rate", "hourlyRate", "rate", "price", "unitPrice"),
}

PROJECT_STATUS_VALUES = {
    **dict.fromkeys(("active", "inprogress", "open", "inprocess", "awarded", "started"), ProjectStatus.ACTIVE),
    **dict.fromkeys(
        ("onhold", "hold", "pending", "notstarted", "created", "suspended", "quoted"), ProjectStatus.ON_HOLD
    ),
    **dict.fromkeys(
        ("closed", "completed", "finished", "cancelled", "canceled", "archived", "done"), ProjectStatus.CLOSED
    ),
}
BILLING_TYPE_VALUES = {
    **dict.fromkeys(
        ("timeandmaterials", "timeandmaterial", "tm", "hourly", "chargebased", "timeandexpense"),
        BillingType.TIME_AND_MATERIALS,
    ),
    **dict.fromkeys(
        ("fixedfee", "fixedprice", "fixedbid", "fixedbidinterval", "fixedbidmilestone", "milestone"),
        BillingType.FIXED_FEE,
    ),
    **dict.fromkeys(("nonbillable", "internal", "investment", "costproject", "none"), BillingType.NON_BILLABLE),
}
EMPLOYMENT_VALUES = {
    **dict.fromkeys(("employee", "fulltime", "parttime", "regular", "permanent", "staff"), EmploymentType.EMPLOYEE),
    **dict.fromkeys(
        ("contractor", "contingent", "contingentworker", "subcontractor", "freelancer", "external", "vendor"),
        EmploymentType.CONTRACTOR,
    ),
}
CONTRACT_STATUS_VALUES = {
    **dict.fromkeys(("active", "approved", "signed", "confirmed", "open", "inprogress"), ContractStatus.ACTIVE),
    **dict.fromkeys(("terminated", "cancelled", "canceled", "closed", "expired", "void"), ContractStatus.TERMINATED),
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class Record:
    """One source record with keys compared loosely, plus command-line defaults for missing fields."""

    fields: Mapping[str, object]
    defaults: Mapping[str, str]

    @classmethod
    def of(cls, item: Mapping[str, object], defaults: Mapping[str, str]) -> Record:
        return cls({_key(k): v for k, v in item.items()}, defaults)

    def text(self, field: str, *, default_key: str | None = None) -> str | None:
        for alias in ALIASES[field]:
            value = text_of(self.fields.get(_key(alias)))
            if value is not None:
                return value
        return self.defaults.get(default_key or field)

    def required(self, field: str, *, default_key: str | None = None) -> str:
        value = self.text(field, default_key=default_key)
        if value is None:
            tried = ", ".join(ALIASES[field])
            name = default_key or field
            raise FieldError(name, f"required value is missing (looked for {tried}; or pass --set {name}=...)")
        return value

    def raw(self, *names: str) -> object:
        return next((self.fields[_key(n)] for n in names if _key(n) in self.fields), None)


def _enum(value: str, table: Mapping[str, Any], what: str) -> Any:
    found = table.get(_key(value))
    if found is None:
        upper = value.strip().upper()
        known = {str(v) for v in table.values()}
        if upper in known:
            return upper
        raise ValueError(f"{what} {value!r} is not known (accepted: {', '.join(sorted(known))} and ERP synonyms)")
    return found


def _active(record: Record) -> bool:
    inactive = record.text("inactive")
    if inactive is not None:
        return not parse_bool(inactive)
    active = record.text("active")
    return parse_bool(active) if active is not None else True


def _envelope(record: Record, options: ReadOptions, source: str) -> dict[str, Any]:
    modified = record.text("modified")
    return {"occurred_at": parse_instant(modified) if modified else options.exported_at, "source_system": source}


def client_event(record: Record, options: ReadOptions, source: str) -> Client:
    return Client(
        **_envelope(record, options, source),
        client_id=record.required("client_id"),
        name=record.required("client_name", default_key="name"),
        billing_entity=record.required("billing_entity"),
        currency=parse_currency(record.required("currency")),
        active=_active(record),
    )


def project_event(record: Record, options: ReadOptions, source: str) -> Project:
    return Project(
        **_envelope(record, options, source),
        project_id=record.required("project_id"),
        client_id=record.required("project_client_id", default_key="client_id"),
        name=record.required("project_name", default_key="name"),
        code=record.text("code"),
        status=_enum(record.required("project_status", default_key="status"), PROJECT_STATUS_VALUES, "status"),
        billing_type=_enum(record.required("billing_type"), BILLING_TYPE_VALUES, "billing type"),
        currency=parse_currency(record.required("currency")),
        business_unit=record.required("business_unit"),
        region=record.required("region"),
        legal_entity=record.required("legal_entity"),
    )


def worker_event(record: Record, options: ReadOptions, source: str) -> Worker:
    return Worker(
        **_envelope(record, options, source),
        worker_id=record.required("worker_id"),
        name=_worker_name(record),
        email=record.text("email"),
        role=record.required("role"),
        employment_type=_enum(record.required("employment_type"), EMPLOYMENT_VALUES, "employment type"),
        cost_rate=decimal_of(record.required("cost_rate")),
        cost_currency=parse_currency(record.required("cost_currency")),
        active=_active(record),
    )


def _worker_name(record: Record) -> str:
    parts = [p for p in (record.text("first_name"), record.text("last_name")) if p]
    return record.text("worker_name") or " ".join(parts) or record.required("worker_name", default_key="name")


# --- contracts ------------------------------------------------------------------------------------


def contract_event(record: Record, lines: Sequence[RateCardLine], options: ReadOptions, source: str) -> ContractVersion:
    return ContractVersion(
        **_envelope(record, options, source),
        contract_id=record.required("contract_id"),
        version=int(record.text("version") or "1"),
        project_id=record.required("contract_project_id", default_key="project_id"),
        status=_enum(record.text("contract_status") or "ACTIVE", CONTRACT_STATUS_VALUES, "contract status"),
        effective_from=parse_date(record.required("effective_from"), options.date_order),
        effective_to=_optional_date(record.text("effective_to"), options),
        currency=parse_currency(record.required("currency")),
        tax_code=record.text("tax_code"),
        discount_percent=decimal_of(record.text("discount_percent") or "0"),
        not_to_exceed=_optional_decimal(record.text("not_to_exceed")),
        rounding_increment_minutes=int(record.text("rounding_increment_minutes") or "1"),
        rounding_mode=RoundingMode((record.text("rounding_mode") or "NEAREST").upper()),
        default_hourly_rate=_optional_decimal(record.text("default_hourly_rate")),
        rate_card=tuple(lines),
    )


def _optional_date(text: str | None, options: ReadOptions) -> Any:
    return parse_date(text, options.date_order) if text else None


def _optional_decimal(text: str | None) -> Any:
    return decimal_of(text) if text else None


def rate_line(record: Record) -> RateCardLine | None:
    """A CSV row's rate-card line; None when the row carries no rate (a contract without a card)."""
    rate = record.text("hourly_rate")
    if rate is None:
        return None
    return RateCardLine(
        worker_id=record.text("line_worker_id"),
        role=record.text("line_role"),
        task_id=record.text("line_task_id"),
        hourly_rate=decimal_of(rate),
    )


def _csv_contracts(
    rows: Iterator[CsvRow | Rejection], options: ReadOptions, source: str, defaults: Mapping[str, str]
) -> Iterator[Outcome]:
    groups: dict[tuple[str, str], list[CsvRow]] = {}
    for row in rows:
        if isinstance(row, Rejection):
            yield row
            continue
        record = Record.of(row.fields, defaults)
        key = (record.text("contract_id") or f"?{row.line}", record.text("version") or "1")
        groups.setdefault(key, []).append(row)
    for group in groups.values():
        yield _contract_group(group, options, source, defaults)


def _contract_group(group: list[CsvRow], options: ReadOptions, source: str, defaults: Mapping[str, str]) -> Outcome:
    where = _lines(group)
    problems: list[str] = []
    lines: list[RateCardLine] = []
    for row in group:
        try:
            line = rate_line(Record.of(row.fields, defaults))
        except ValueError as error:
            problems.append(f"line {row.line}: {describe_error(error)}")
            continue
        if line is not None:
            lines.append(line)
    if problems:
        return Rejection(where, "version rejected whole; " + "; ".join(problems))
    try:
        return Parsed(where, (contract_event(Record.of(group[0].fields, defaults), lines, options, source),))
    except ValueError as error:
        return Rejection(where, describe_error(error))


def _lines(group: list[CsvRow]) -> str:
    numbers = [row.line for row in group]
    return f"line {numbers[0]}" if len(numbers) == 1 else "lines " + ", ".join(str(n) for n in numbers)


def json_contract_events(
    item: Mapping[str, object], options: ReadOptions, source: str, defaults: Mapping[str, str]
) -> list[Event]:
    """A contract object and its amendments, each a `ContractVersion` (amendments accumulate)."""
    base = {k: v for k, v in item.items() if _key(k) not in {"amendments", "versions"}}
    events: list[Event] = [_json_version(base, options, source, defaults)]
    amendments = item.get("amendments") or item.get("versions") or []
    if not isinstance(amendments, list):
        raise ValueError("amendments must be a list")
    for number, amendment in enumerate(amendments, start=1):
        if not isinstance(amendment, Mapping):
            raise ValueError(f"amendment {number} is not an object")
        # Each amendment changes the contract as the previous version left it.
        base = {**base, **amendment}
        try:
            events.append(_json_version(base, options, source, defaults))
        except ValueError as error:
            raise ValueError(f"amendment {number}: {describe_error(error)}") from None
    return events


def _json_version(item: Mapping[str, object], options: ReadOptions, source: str, defaults: Mapping[str, str]) -> Event:
    record = Record.of(item, defaults)
    raw_lines = record.raw("rate_card", "rateCard", "lines", "rateCardLines", "priceListLines") or []
    if not isinstance(raw_lines, list):
        raise ValueError("rate_card must be a list")
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        line = rate_line(Record.of(raw, defaults)) if isinstance(raw, Mapping) else None
        if line is None:
            raise ValueError(f"rate_card line {number} has no hourly rate")
        lines.append(line)
    return contract_event(record, lines, options, source)


# --- whole files ----------------------------------------------------------------------------------

SingleConverter = Callable[[Record, ReadOptions, str], Event]
CONVERTERS: dict[str, SingleConverter] = {"clients": client_event, "projects": project_event, "workers": worker_event}


def read_erp(
    path: Path, kind: Kind, options: ReadOptions, *, source: str = "erp", defaults: Mapping[str, str] | None = None
) -> Iterator[Outcome]:
    """Every record of an ERP export of `kind` as events or a rejection naming its line or item."""
    defaults = dict(defaults or {})
    if is_json_file(path):
        return _json_outcomes(path, kind, options, source, defaults)
    if kind == "contracts":
        return _csv_contracts(read_table(path, options), options, source, defaults)
    return _csv_outcomes(path, CONVERTERS[kind], options, source, defaults)


def _csv_outcomes(
    path: Path, convert: SingleConverter, options: ReadOptions, source: str, defaults: Mapping[str, str]
) -> Iterator[Outcome]:
    for row in read_table(path, options):
        if isinstance(row, Rejection):
            yield row
            continue
        try:
            yield Parsed(row.where, (convert(Record.of(row.fields, defaults), options, source),))
        except FieldError as error:
            yield Rejection(row.where, error.reason, error.field, row.fields)
        except ValueError as error:
            yield Rejection(row.where, describe_error(error), values=row.fields)


def _json_outcomes(
    path: Path, kind: Kind, options: ReadOptions, source: str, defaults: Mapping[str, str]
) -> Iterator[Outcome]:
    for record in read_json_records(path, LIST_KEYS):
        if isinstance(record, Rejection):
            yield record
            continue
        where, item = record
        try:
            if not isinstance(item, Mapping):
                raise ValueError("is not a JSON object")
            if kind == "contracts":
                yield Parsed(where, tuple(json_contract_events(item, options, source, defaults)))
            else:
                yield Parsed(where, (CONVERTERS[kind](Record.of(item, defaults), options, source),))
        except ValueError as error:
            yield Rejection(where, describe_error(error))
