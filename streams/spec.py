"""The pipeline spec: one declarative TOML file per domain.

It declares each schema's versions and fields, how each version upcasts to the next, the
dedup horizon, the message size limit and the outlier screening. A new domain is a new
file; no code changes.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from streams.upcast import UpcastSpecError, UpcastStep, parse_step
from tables.feature_spec import FeatureSpec, FeatureSpecError, parse_feature_spec


class SpecError(ValueError):
    """The domain spec file is invalid; the message says where."""


class FieldType(StrEnum):
    FLOAT = "float"
    INT = "int"
    STR = "str"
    BOOL = "bool"


class OutlierTransform(StrEnum):
    IDENTITY = "identity"
    LOG1P = "log1p"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    allowed: frozenset[Any] | None = None
    min_length: int | None = None
    max_length: int | None = None
    outlier: OutlierTransform | None = None


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    version: int
    fields: tuple[FieldSpec, ...]
    upcast: tuple[UpcastStep, ...]  # steps from this version to the next


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    current_version: int
    versions: Mapping[int, SchemaVersion]

    @property
    def current(self) -> SchemaVersion:
        return self.versions[self.current_version]

    def upcast_chain(self, version: int) -> tuple[tuple[UpcastStep, ...], ...]:
        """The step lists that carry ``version`` to the current version."""
        return tuple(self.versions[v].upcast for v in range(version, self.current_version))


@dataclass(frozen=True, slots=True)
class DomainSpec:
    name: str
    dedup_horizon_ms: int
    max_message_bytes: int
    outlier_threshold: float
    outlier_warmup: int
    schemas: Mapping[str, Schema]
    fingerprint: str  # sha256 of the file's bytes, short form
    features: FeatureSpec | None = None  # the [features] section, when declared


def load_spec(path: Path) -> DomainSpec:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SpecError(f"cannot read domain spec {path}: {error.strerror}") from None
    return parse_spec(data, source=str(path))


def parse_spec(data: bytes, *, source: str = "<spec>") -> DomainSpec:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{source}: not valid TOML: {error}") from None
    try:
        domain = _table(doc, "domain")
        outliers = doc.get("outliers", {})
        schemas = {name: _schema(name, raw) for name, raw in _table(doc, "schemas").items()}
        if not schemas:
            raise SpecError("[schemas] declares no schema")
        features = None
        if "features" in doc:
            numeric = {
                f.name
                for schema in schemas.values()
                for f in schema.current.fields
                if f.type in (FieldType.FLOAT, FieldType.INT, FieldType.BOOL)
            }
            features = parse_feature_spec(doc["features"], numeric)
        return DomainSpec(
            name=str(domain["name"]),
            dedup_horizon_ms=_positive_int(domain, "dedup_horizon_ms"),
            max_message_bytes=_positive_int(domain, "max_message_bytes"),
            outlier_threshold=float(outliers.get("threshold", 6.0)),
            outlier_warmup=int(outliers.get("warmup", 200)),
            schemas=schemas,
            fingerprint=hashlib.sha256(data).hexdigest()[:16],
            features=features,
        )
    except (KeyError, TypeError, ValueError, UpcastSpecError, FeatureSpecError) as error:
        if isinstance(error, SpecError):
            raise SpecError(f"{source}: {error}") from None
        raise SpecError(f"{source}: {type(error).__name__}: {error}") from None


def _table(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, Mapping):
        raise SpecError(f"missing table [{key}]")
    return value


def _positive_int(table: Mapping[str, Any], key: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or value <= 0:
        raise SpecError(f"{key} must be a positive integer, got {value!r}")
    return value


def _schema(name: str, raw: Mapping[str, Any]) -> Schema:
    current = raw.get("current_version")
    if not isinstance(current, int):
        raise SpecError(f"schema {name!r}: current_version must be an integer")
    versions: dict[int, SchemaVersion] = {}
    for key, body in _table(raw, "versions").items():
        version = int(key)
        fields = tuple(
            _field(name, version, field_name, field_raw)
            for field_name, field_raw in _table(body, "fields").items()
        )
        steps = tuple(parse_step(step) for step in body.get("upcast", []))
        versions[version] = SchemaVersion(version=version, fields=fields, upcast=steps)
    if current not in versions:
        raise SpecError(f"schema {name!r}: current version {current} is not declared")
    for version in versions:
        if version > current:
            raise SpecError(f"schema {name!r}: version {version} is newer than current")
        if version < current and version + 1 not in versions:
            raise SpecError(f"schema {name!r}: no version {version + 1} to upcast {version} to")
    return Schema(name=name, current_version=current, versions=versions)


def _field(schema: str, version: int, name: str, raw: Mapping[str, Any]) -> FieldSpec:
    where = f"schema {schema!r} v{version} field {name!r}"
    try:
        field_type = FieldType(raw["type"])
    except (KeyError, ValueError):
        raise SpecError(f"{where}: type must be one of float, int, str, bool") from None
    known = {
        "type",
        "required",
        "min",
        "max",
        "allowed",
        "min_length",
        "max_length",
        "outlier",
    }
    unknown = set(raw) - known
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    outlier = raw.get("outlier")
    if outlier is True:
        outlier = OutlierTransform.IDENTITY
    elif outlier is False:
        outlier = None
    elif outlier is not None:
        try:
            outlier = OutlierTransform(outlier)
        except ValueError:
            raise SpecError(f"{where}: outlier must be true, 'identity' or 'log1p'") from None
    if outlier is not None and field_type not in (FieldType.FLOAT, FieldType.INT):
        raise SpecError(f"{where}: outlier screening needs a numeric field")
    allowed = raw.get("allowed")
    return FieldSpec(
        name=name,
        type=field_type,
        required=bool(raw.get("required", True)),
        minimum=_optional_float(raw.get("min")),
        maximum=_optional_float(raw.get("max")),
        allowed=frozenset(allowed) if allowed is not None else None,
        min_length=raw.get("min_length"),
        max_length=raw.get("max_length"),
        outlier=outlier,
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
