"""The registry's state (subjects, versions, schema ids, compatibility config) and its log format.

`RegistryState` is the pure, in-memory state plus the rules of every change; it turns a request into
log records and applies records. Every instance builds its state only by applying the log in order
(`replica.SchemaStore` tails it, `log.KafkaLog` reads and writes it), the leader's own writes included,
so every instance's state is a prefix of the same history.

The log format: each key is JSON naming what the record is about, each value is that thing's whole
current state, so compaction keeps the latest state per key and a tombstone (None) forgets it.
- `{"kind": "SCHEMA", "subject": s, "version": v}` → `{"subject", "version", "id", "schema",
  "schemaType", "references", "deleted"}` (a soft delete rewrites it with `deleted: true`).
- `{"kind": "CONFIG", "subject": s | null}` → `{"compatibilityLevel": level, "decimalStrict": bool}`
  (null subject = global; either key may be absent, meaning "not configured here").
- `{"kind": "MAX_ID"}` → `{"id": n}`: the highest schema id ever handed out, written with each new id,
  so compaction of permanently deleted schemas never lets an id be handed out twice.
- `{"kind": "LEADER"}` → `{"url", "instance", "since"}`: the instance that claimed the log last; the
  others forward writes there.

New schemas are checked against the Avro specification (`validation`) before they are stored; schemas
stored earlier are never re-judged, so re-registering, reading and comparing them keeps working.
Decimal strictness (`Config.decimal_strict`, README "The schema registry") comes from the subject's
config, else the global config, else is on for backbone's own schemas only: those whose top-level type
lives in the `dev.backbone` namespace, as every schema in `schemas/avro/` (the catalog's contract) does.

Ids and version numbers are decided from this state, so only the leader decides, and only once its
state holds the whole log (see docs/schema-registry.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from backbone.errors import BackboneError
from backbone.registry.compatibility import (
    CompatibilityLevel,
    InvalidSchemaError,
    ParsedSchema,
    check_compatibility,
    compact,
    normalize,
    parse,
)
from backbone.registry.validation import schema_problems

DEFAULT_LEVEL = CompatibilityLevel.BACKWARD
BACKBONE_NAMESPACE = "dev.backbone"
"""Schemas whose top-level type lives here are backbone's own: decimal-strict unless configured off."""
Record = tuple[dict[str, Any], dict[str, Any] | None]


class RegistryError(BackboneError):
    """A request the registry refuses, with the HTTP status and Confluent error code to answer with."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: object) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one subject."""

    subject: str
    version: int
    schema_id: int
    schema: str
    schema_type: str = "AVRO"
    references: tuple[dict[str, Any], ...] = ()
    deleted: bool = False

    def to_value(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "version": self.version,
            "id": self.schema_id,
            "schema": self.schema,
            "schemaType": self.schema_type,
            "references": list(self.references),
            "deleted": self.deleted,
        }

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> SchemaVersion:
        return cls(
            subject=value["subject"],
            version=value["version"],
            schema_id=value["id"],
            schema=value["schema"],
            schema_type=value.get("schemaType", "AVRO"),
            references=tuple(value.get("references") or ()),
            deleted=value.get("deleted", False),
        )

    def key(self) -> dict[str, Any]:
        return {"kind": "SCHEMA", "subject": self.subject, "version": self.version}


@dataclass(frozen=True)
class Config:
    """The global or one subject's config; a setting left None falls through (subject, global, default)."""

    level: CompatibilityLevel | None = None
    decimal_strict: bool | None = None

    def to_value(self) -> dict[str, Any] | None:
        """The config record's value; None (a tombstone) when nothing is configured."""
        value: dict[str, Any] = {}
        if self.level is not None:
            value["compatibilityLevel"] = self.level.value
        if self.decimal_strict is not None:
            value["decimalStrict"] = self.decimal_strict
        return value or None

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Config:
        level = value.get("compatibilityLevel")
        return cls(CompatibilityLevel(level) if level else None, value.get("decimalStrict"))

    def updated(self, level: CompatibilityLevel | None, decimal_strict: bool | None) -> Config:
        """This config with the settings a request gave (None: keep the current one)."""
        return Config(
            level if level is not None else self.level,
            decimal_strict if decimal_strict is not None else self.decimal_strict,
        )


@dataclass
class RegistryState:
    """Subjects, versions, ids and config; decides changes (as records) and applies records."""

    subjects: dict[str, dict[int, SchemaVersion]] = field(default_factory=dict)
    # Keyed by subject; the None key is the global config.
    configs: dict[str | None, Config] = field(default_factory=dict)
    # Highest id ever handed out (from schemas and MAX_ID records), so no id is ever reused.
    max_id: int = 0
    # The latest LEADER record: which instance leads, and where followers forward writes.
    leader: dict[str, Any] | None = None

    # -- applying records (replay and live writes) ------------------------------------------------

    def apply(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        if key.get("kind") == "SCHEMA":
            self._apply_schema(key, value)
        elif key.get("kind") == "CONFIG":
            self._apply_config(key, value)
        elif key.get("kind") == "MAX_ID" and value is not None:
            self.max_id = max(self.max_id, int(value["id"]))
        elif key.get("kind") == "LEADER":
            self.leader = value

    def _apply_schema(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        versions = self.subjects.setdefault(key["subject"], {})
        if value is None:
            versions.pop(key["version"], None)
            if not versions:
                del self.subjects[key["subject"]]
            return
        record = SchemaVersion.from_value(value)
        versions[record.version] = record
        self.max_id = max(self.max_id, record.schema_id)

    def _apply_config(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        subject = key.get("subject")
        if value is None:
            self.configs.pop(subject, None)
        else:
            self.configs[subject] = Config.from_value(value)

    # -- queries ----------------------------------------------------------------------------------

    def versions(self, subject: str, *, deleted: bool = False) -> list[SchemaVersion]:
        """The subject's versions, oldest first; soft-deleted ones only when `deleted`."""
        # Copies are taken atomically (under the GIL), so readers need not wait for the writer's lock.
        found = dict(self.subjects.get(subject, {}))
        return [found[v] for v in sorted(found) if deleted or not found[v].deleted]

    def live_versions(self, subject: str) -> list[SchemaVersion]:
        """Live versions, or 40401 when the subject has none."""
        versions = self.versions(subject)
        if not versions:
            raise subject_not_found(subject)
        return versions

    def subject_names(self, *, deleted: bool = False, deleted_only: bool = False) -> list[str]:
        def wanted(subject: str) -> bool:
            live = bool(self.versions(subject))
            return not live if deleted_only else (live or deleted)

        return sorted(s for s in list(self.subjects) if wanted(s))

    def version(self, subject: str, version: str | int, *, deleted: bool = False) -> SchemaVersion:
        """One version by number, or `latest`/-1; 40401 / 40402 when absent."""
        number = parse_version(version)
        candidates = self.versions(subject, deleted=deleted)
        if not candidates:
            raise subject_not_found(subject)
        if number == -1:
            return candidates[-1]
        match = [v for v in candidates if v.version == number]
        if not match:
            raise version_not_found(subject, version)
        return match[0]

    def schema_by_id(self, schema_id: int) -> SchemaVersion:
        for version in self.all_versions(deleted=True):
            if version.schema_id == schema_id:
                return version
        raise schema_not_found(f"Schema {schema_id} not found")

    def versions_of_id(self, schema_id: int, *, deleted: bool = False) -> list[SchemaVersion]:
        found = [v for v in self.all_versions(deleted=deleted) if v.schema_id == schema_id]
        if not found and not deleted:
            self.schema_by_id(schema_id)  # 40403 when the id never existed
        return found

    def all_versions(self, *, deleted: bool = False) -> Iterator[SchemaVersion]:
        for subject in sorted(list(self.subjects)):
            yield from self.versions(subject, deleted=deleted)

    @property
    def global_level(self) -> CompatibilityLevel:
        return self.config(None).level or DEFAULT_LEVEL

    def config(self, subject: str | None) -> Config:
        """The config set on `subject` itself (None: the global one); empty when nothing is set."""
        return self.configs.get(subject, Config())

    def level(self, subject: str | None) -> CompatibilityLevel:
        return self.config(subject).level or self.global_level

    def decimal_strict(self, subject: str, schemas: Sequence[ParsedSchema]) -> bool:
        """Whether decimal precision and scale are frozen for `subject` (see the module doc)."""
        for configured in (self.config(subject).decimal_strict, self.config(None).decimal_strict):
            if configured is not None:
                return configured
        return any(owned_by_backbone(schema) for schema in schemas)

    def find(
        self, subject: str, candidate: SchemaVersion, *, deleted: bool = False, normalized: bool = False
    ) -> SchemaVersion | None:
        """The subject's version holding the same schema as `candidate`, if any.

        With `normalized` (the candidate is in normalized form) stored versions are compared normalized
        too, so a schema registered as written is found by an equivalent one sent with `normalize=true`.
        """
        for version in self.versions(subject, deleted=deleted):
            if _same_schema(version, candidate):
                return version
            if normalized and _same_schema(replace(version, schema=self._normalized(version)), candidate):
                return version
        return None

    def _normalized(self, version: SchemaVersion) -> str:
        try:
            return normalize(version.schema, self.referenced_texts(version.references))
        except (InvalidSchemaError, RegistryError):
            return version.schema  # a stored schema that no longer parses is only ever equal to itself

    def id_for(self, candidate: SchemaVersion) -> int:
        """The id the same schema already has under any subject, else a fresh one."""
        for version in self.all_versions(deleted=True):
            if _same_schema(version, candidate):
                return version.schema_id
        return self.max_id + 1

    # -- decisions: requests in, records out ------------------------------------------------------

    def register(
        self, subject: str, candidate: SchemaVersion, *, source: str | None = None, normalized: bool = False
    ) -> tuple[SchemaVersion, list[Record]]:
        """The registered version (existing or new) and the records to write (none when it exists).

        `source` is the schema as the client wrote it (validated instead of the normalized form).
        """
        existing = self.find(subject, candidate, normalized=normalized)
        if existing is not None:
            return existing, []
        self.validate_candidate(subject, candidate, source=source, normalized=normalized)
        messages = self.compatibility_messages(subject, candidate, self.versions(subject))
        if messages:
            raise RegistryError(
                409,
                409,
                f"Schema being registered is incompatible with an earlier schema for subject "
                f"'{subject}', details: {messages}",
            )
        all_versions = self.versions(subject, deleted=True)
        number = all_versions[-1].version + 1 if all_versions else 1
        new = replace(candidate, subject=subject, version=number, schema_id=self.id_for(candidate))
        records: list[Record] = [(new.key(), new.to_value())]
        if new.schema_id > self.max_id:
            # Kept by compaction after every schema holding the id is permanently deleted: ids never repeat.
            records.append(({"kind": "MAX_ID"}, {"id": new.schema_id}))
        return new, records

    def validate_new(self, candidate: SchemaVersion, source: str | None = None) -> None:
        """422/42201 naming every place where a schema not yet stored breaks the Avro specification."""
        problems = schema_problems(source or candidate.schema, self.referenced_texts(candidate.references))
        if problems:
            raise RegistryError(422, 42201, f"Invalid schema: {'; '.join(problems)}")

    def validate_candidate(
        self, subject: str, candidate: SchemaVersion, *, source: str | None = None, normalized: bool = False
    ) -> None:
        """`validate_new` unless the subject already holds this schema (stored schemas are not re-judged)."""
        if self.find(subject, candidate, deleted=True, normalized=normalized) is None:
            self.validate_new(candidate, source)

    def compatibility_against(self, subject: str, version: str | int) -> list[SchemaVersion]:
        """The version a compatibility check compares with: none for `latest` of an empty subject."""
        if parse_version(version) == -1 and not self.versions(subject):
            return []  # Confluent: anything is compatible with the latest version of nothing
        return [self.version(subject, version)]

    def compatibility_messages(self, subject: str, candidate: SchemaVersion, against: list[SchemaVersion]) -> list[str]:
        level = self.level(subject)
        new, old = self.parsed(candidate), [self.parsed(v) for v in against]
        strict = self.decimal_strict(subject, [new, *old])
        return check_compatibility(level, new, old, decimal_strict=strict)

    def delete_version(self, subject: str, version: str | int, *, permanent: bool) -> tuple[int, list[Record]]:
        if permanent:
            target = self.version(subject, version, deleted=True)
            if not target.deleted:
                raise RegistryError(
                    404,
                    40407,
                    f"Subject '{subject}' Version {target.version} was not deleted first "
                    "before being permanently deleted",
                )
            return target.version, [(target.key(), None)]
        if parse_version(version) != -1 and any(
            v.version == parse_version(version) for v in self.versions(subject, deleted=True) if v.deleted
        ):
            raise RegistryError(404, 40406, f"Subject '{subject}' Version {version} was soft deleted.")
        target = self.version(subject, version)
        soft = replace(target, deleted=True)
        return target.version, [(soft.key(), soft.to_value())]

    def delete_subject(self, subject: str, *, permanent: bool) -> tuple[list[int], list[Record]]:
        every = self.versions(subject, deleted=True)
        if not every:
            raise subject_not_found(subject)
        live = [v for v in every if not v.deleted]
        if permanent:
            if live:
                raise RegistryError(
                    404, 40405, f"Subject '{subject}' was not deleted first before being permanently deleted"
                )
            config: list[Record] = [({"kind": "CONFIG", "subject": subject}, None)]
            return [v.version for v in every], [(v.key(), None) for v in every] + config
        if not live:
            raise RegistryError(404, 40404, f"Subject '{subject}' was soft deleted.")
        soft = [replace(v, deleted=True) for v in live]
        return [v.version for v in live], [(v.key(), v.to_value()) for v in soft]

    def set_config(
        self, subject: str | None, level: CompatibilityLevel | None, decimal_strict: bool | None = None
    ) -> list[Record]:
        """Records setting the given settings on `subject` (None: global), keeping the ones not given."""
        updated = self.config(subject).updated(level, decimal_strict)
        return [({"kind": "CONFIG", "subject": subject}, updated.to_value())]

    def delete_config(self, subject: str | None) -> tuple[Config, list[Record]]:
        """The config removed from `subject` (None: global, back to the defaults); 40401 if it has none."""
        if subject is not None and subject not in self.configs:
            raise subject_not_found(subject)
        return self.config(subject), [({"kind": "CONFIG", "subject": subject}, None)]

    def parsed(self, version: SchemaVersion) -> ParsedSchema:
        return parse(version.schema, self.referenced_texts(version.references))

    def referenced_texts(self, references: tuple[dict[str, Any], ...]) -> list[str]:
        """The texts of referenced schemas, dependencies first, so their named types resolve."""
        texts: list[str] = []
        for ref in references:
            target = self.version(ref["subject"], ref["version"], deleted=True)
            texts += [*self.referenced_texts(target.references), target.schema]
        return texts


def parse_version(version: str | int) -> int:
    """A version number; `latest` is -1. 42202 for anything else."""
    if str(version) == "latest":
        return -1
    try:
        number = int(version)
    except ValueError:
        number = 0
    if number == 0 or number < -1:
        raise RegistryError(
            422,
            42202,
            f"The specified version '{version}' is not a valid version id. Allowed values are between "
            '[1, 2^31-1] and the string "latest"',
        )
    return number


def _same_schema(a: SchemaVersion, b: SchemaVersion) -> bool:
    return (a.schema, a.schema_type, a.references) == (b.schema, b.schema_type, b.references)


def owned_by_backbone(schema: ParsedSchema) -> bool:
    """Whether the schema's top-level type is in backbone's namespace (fastavro gives full names)."""
    name = schema.schema.get("name") if isinstance(schema.schema, dict) else None
    return isinstance(name, str) and name.startswith(f"{BACKBONE_NAMESPACE}.")


def candidate_schema(
    state: RegistryState,
    schema: str,
    schema_type: str = "AVRO",
    references: list[dict[str, Any]] | None = None,
    *,
    normalized: bool = False,
) -> SchemaVersion:
    """A request's schema, validated and in stored form; 422/42201 when it is not valid Avro."""
    if schema_type.upper() != "AVRO":
        raise RegistryError(422, 42201, f"Schema type {schema_type} is not supported; this registry is AVRO-only")
    refs = tuple({"name": r["name"], "subject": r["subject"], "version": r["version"]} for r in (references or []))
    try:
        texts = state.referenced_texts(refs)
        parse(schema, texts)
        text = normalize(schema, texts) if normalized else compact(schema)
    except InvalidSchemaError as e:
        raise RegistryError(422, 42201, str(e)) from e
    except RegistryError as e:
        raise RegistryError(422, 42201, f"Invalid schema reference: {e}") from e
    return SchemaVersion(subject="", version=0, schema_id=0, schema=text, references=refs)
