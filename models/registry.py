"""The model registry behind one small protocol: MLflow for real, memory for tests.

A model is a directory (``models/artifact.py``, ``models/export.py``). Registering it stores
a copy of its files under a name; the registry numbers the copies ``"1"``, ``"2"``, ... per
name, and aliases such as ``champion`` and ``challenger`` point at those numbers. Our own
version id (``models.scoring.model_version``) and the hash of the files travel with each
registered version, so a downloaded copy can be checked before it serves.

The event log (``model.events``) is the source of truth for which alias points where; the
registry is a mirror that serving reads from, and MLflow keeps no alias history of its own.
``reconcile`` compares the two and reports the differences: nothing here fixes them
silently.

Both registries behave the same: names are plain identifiers, registry versions are
decimal strings, a model nobody registered has no versions and no aliases, and asking for
a version that does not exist raises ``UnknownModelVersionError``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

EXPERIMENT = "headrace-models"
VERSION_TAG = "headrace.version"
HASH_TAG = "headrace.artifact_hash"
MODEL_TAG = "headrace.model"
DEFAULT_ARTIFACT_DIRECTORY = "mlartifacts"  # next to a sqlite database, when none is given

_IGNORED_SUFFIXES = frozenset({".plan"})  # TensorRT engines: built per device, not shipped
_IGNORED_DIRECTORIES = frozenset({"__pycache__"})
_CHUNK_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESERVED_ALIAS = re.compile(r"latest|[vV][0-9]+", re.IGNORECASE)
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


class UnknownModelVersionError(LookupError):
    """The registry holds no such model, or no such version of it."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    registry_version: str  # the registry's number for this copy: "1", "2", ...
    version: str  # our id: the first 12 hex digits of model.onnx's sha256
    artifact_hash: str  # artifact_hash() of the registered files
    artifact_uri: str  # where the files can be downloaded from


@dataclass(frozen=True)
class AliasDifference:
    alias: str
    expected: str | None  # from the event log; None: the alias must not exist
    actual: str | None  # in the registry; None: it does not exist


class ModelRegistry(Protocol):
    def register(self, name: str, directory: Path, *, version: str) -> RegisteredVersion:
        """Store a copy of the model's files (``artifact_files``) as the next version."""
        ...

    def versions(self, name: str) -> list[RegisteredVersion]:
        """Every registered version of the model, oldest first; empty for an unknown one."""
        ...

    def set_alias(self, name: str, alias: str, registry_version: str) -> None:
        """Point the alias at the version, moving it if it points elsewhere."""
        ...

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove the alias; nothing happens when it (or the model) does not exist."""
        ...

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> registry version; empty for an unknown model."""
        ...

    def download(self, name: str, registry_version: str, destination: Path) -> Path:
        """Write the version's files into ``destination`` (absent or an empty directory)
        and return it. The caller checks ``artifact_hash`` before trusting the files."""
        ...


# --------------------------------------------------------------------------------------------
# The files of a model and their hash


def artifact_files(directory: Path) -> list[str]:
    """The model's files as sorted relative POSIX paths, without engine caches and bytecode."""
    if not directory.is_dir():
        raise NotADirectoryError(f"not a model directory: {directory}")
    files = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if (
            path.is_file()
            and path.suffix not in _IGNORED_SUFFIXES
            and _IGNORED_DIRECTORIES.isdisjoint(relative.parts)
        ):
            files.append(relative.as_posix())
    return sorted(files)


def artifact_hash(directory: Path) -> str:
    """sha256 over the model's files: each relative path and content, length-prefixed,
    in path order. The same files give the same hash wherever the directory lies."""
    digest = hashlib.sha256()
    for relative in artifact_files(directory):
        path = directory / relative
        name = relative.encode()
        digest.update(len(name).to_bytes(8, "big"))
        digest.update(name)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def reconcile(
    expected: Mapping[str, str | None], actual: Mapping[str, str]
) -> list[AliasDifference]:
    """Where the registry's aliases differ from those folded from the event log.

    ``expected`` maps each alias the log manages to its registry version, or to None when
    the alias must not exist; aliases the log does not name are left to whoever set them.
    The log is the source of truth: the differences are reported, in alias order, for
    someone to act on; this function changes nothing.
    """
    return [
        AliasDifference(alias=alias, expected=want, actual=actual.get(alias))
        for alias, want in sorted(expected.items())
        if actual.get(alias) != want
    ]


# --------------------------------------------------------------------------------------------
# In memory


@dataclass(frozen=True)
class _StoredVersion:
    registered: RegisteredVersion
    files: dict[str, bytes]


class InMemoryRegistry:
    """The registry contract in a dictionary: copies of the files, held in memory."""

    def __init__(self) -> None:
        self._versions: dict[str, list[_StoredVersion]] = {}
        self._aliases: dict[str, dict[str, str]] = {}

    def register(self, name: str, directory: Path, *, version: str) -> RegisteredVersion:
        _check_name(name)
        with tempfile.TemporaryDirectory(prefix="headrace-register-") as staging:
            digest = _stage(directory, Path(staging))
            files = {
                relative: (Path(staging) / relative).read_bytes()
                for relative in artifact_files(Path(staging))
            }
        stored = self._versions.setdefault(name, [])
        registry_version = str(len(stored) + 1)
        registered = RegisteredVersion(
            name=name,
            registry_version=registry_version,
            version=version,
            artifact_hash=digest,
            artifact_uri=f"memory://{name}/{registry_version}",
        )
        stored.append(_StoredVersion(registered, files))
        self._aliases.setdefault(name, {})
        return registered

    def versions(self, name: str) -> list[RegisteredVersion]:
        _check_name(name)
        return [stored.registered for stored in self._versions.get(name, [])]

    def set_alias(self, name: str, alias: str, registry_version: str) -> None:
        _check_name(name)
        _check_alias(alias)
        self._stored(name, registry_version)
        self._aliases[name][alias] = str(_version_number(name, registry_version))

    def delete_alias(self, name: str, alias: str) -> None:
        _check_name(name)
        self._aliases.get(name, {}).pop(alias, None)

    def aliases(self, name: str) -> dict[str, str]:
        _check_name(name)
        return dict(self._aliases.get(name, {}))

    def download(self, name: str, registry_version: str, destination: Path) -> Path:
        stored = self._stored(name, registry_version)
        _prepare_destination(destination)
        _write_files(destination, stored.files)
        return destination

    def _stored(self, name: str, registry_version: str) -> _StoredVersion:
        _check_name(name)
        stored = self._versions.get(name, [])
        number = _version_number(name, registry_version)
        if number > len(stored):
            raise UnknownModelVersionError(f"{name} has no version {registry_version}")
        return stored[number - 1]


# --------------------------------------------------------------------------------------------
# MLflow


class MlflowRegistry:
    """MLflow's model registry: one run per registration holds the files as artifacts.

    ``tracking_uri`` is a database URI (``sqlite:////path/mlflow.db``: no server needed) or
    a tracking server's URL; it is the registry URI too. Runs are created in the
    ``experiment``, which is created with ``artifact_location`` when it does not exist yet
    (an existing experiment keeps its own). Without an ``artifact_location``, a sqlite
    database keeps its artifacts in a directory beside it, and a server uses its own
    default artifact root.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str | None = None,
        *,
        experiment: str = EXPERIMENT,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location or _default_artifact_location(tracking_uri)
        self.experiment = experiment
        self._experiment_id: str | None = None
        with _quiet_mlflow():
            self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def register(self, name: str, directory: Path, *, version: str) -> RegisteredVersion:
        _check_name(name)
        with _quiet_mlflow(), tempfile.TemporaryDirectory(prefix="headrace-register-") as staging:
            digest = _stage(directory, Path(staging))
            tags = {MODEL_TAG: name, VERSION_TAG: version, HASH_TAG: digest}
            run = self._client.create_run(
                self._experiment(), tags=tags, run_name=f"{name}-{version}"
            )
            status = "FAILED"
            try:
                self._client.log_artifacts(run.info.run_id, staging)
                status = "FINISHED"
            finally:
                self._client.set_terminated(run.info.run_id, status=status)
            self._create_registered_model(name)
            model_version = self._client.create_model_version(
                name,
                source=run.info.artifact_uri,
                run_id=run.info.run_id,
                tags={VERSION_TAG: version, HASH_TAG: digest},
            )
        return _registered(model_version)

    def versions(self, name: str) -> list[RegisteredVersion]:
        _check_name(name)
        found: list[RegisteredVersion] = []
        page_token: str | None = None
        with _quiet_mlflow():
            while True:
                page = self._client.search_model_versions(f"name = '{name}'", page_token=page_token)
                found.extend(_registered(model_version) for model_version in page)
                page_token = page.token
                if not page_token:
                    break
        return sorted(found, key=lambda registered: int(registered.registry_version))

    def set_alias(self, name: str, alias: str, registry_version: str) -> None:
        _check_name(name)
        _check_alias(alias)
        number = str(_version_number(name, registry_version))
        with _quiet_mlflow(), _unknown_as_lookup_error(name, registry_version):
            self._client.set_registered_model_alias(name, alias, number)

    def delete_alias(self, name: str, alias: str) -> None:
        _check_name(name)
        with _quiet_mlflow():
            try:
                self._client.delete_registered_model_alias(name, alias)
            except MlflowException as error:
                if error.error_code != _NOT_FOUND:
                    raise

    def aliases(self, name: str) -> dict[str, str]:
        _check_name(name)
        with _quiet_mlflow():
            try:
                model = self._client.get_registered_model(name)
            except MlflowException as error:
                if error.error_code == _NOT_FOUND:
                    return {}
                raise
        return {alias: str(number) for alias, number in model.aliases.items()}

    def download(self, name: str, registry_version: str, destination: Path) -> Path:
        _check_name(name)
        number = str(_version_number(name, registry_version))
        with _quiet_mlflow():
            with _unknown_as_lookup_error(name, registry_version):
                source = self._client.get_model_version(name, number).source
            _prepare_destination(destination)
            with tempfile.TemporaryDirectory(prefix="headrace-download-") as staging:
                # MLflow puts a directory's files under dst_path/<last part of the URI>.
                downloaded = mlflow.artifacts.download_artifacts(
                    artifact_uri=source,
                    dst_path=staging,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
                destination.rmdir()
                shutil.move(downloaded, destination)
        return destination

    def _experiment(self) -> str:
        if self._experiment_id is None:
            experiment = self._client.get_experiment_by_name(self.experiment)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
            else:
                try:
                    self._experiment_id = self._client.create_experiment(
                        self.experiment, artifact_location=self.artifact_location
                    )
                except MlflowException as error:  # created meanwhile by someone else
                    if error.error_code != _ALREADY_EXISTS:
                        raise
                    return self._experiment()
        return self._experiment_id

    def _create_registered_model(self, name: str) -> None:
        try:
            self._client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != _ALREADY_EXISTS:
                raise


def _registered(model_version: ModelVersion) -> RegisteredVersion:
    """Versions registered by hand, not through headrace, have empty ids and hashes."""
    tags = model_version.tags
    return RegisteredVersion(
        name=model_version.name,
        registry_version=str(model_version.version),
        version=tags.get(VERSION_TAG, ""),
        artifact_hash=tags.get(HASH_TAG, ""),
        artifact_uri=model_version.source or "",
    )


def _default_artifact_location(tracking_uri: str) -> str | None:
    prefix = "sqlite:///"
    database = tracking_uri.removeprefix(prefix)
    if not tracking_uri.startswith(prefix) or database in {"", ":memory:"}:
        return None
    return (Path(database).parent / DEFAULT_ARTIFACT_DIRECTORY).resolve().as_uri()


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    with warnings.catch_warnings():
        # MLflow 3.17's sqlite store configures SQLAlchemy's ``noload`` strategy when its
        # module is first imported, and SQLAlchemy 2.1 deprecates it. MLflow's business.
        warnings.filterwarnings(
            "ignore",
            message=r"The ``noload`` loader strategy is deprecated",
            category=DeprecationWarning,
        )
        yield


@contextmanager
def _unknown_as_lookup_error(name: str, registry_version: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as error:
        if error.error_code == _NOT_FOUND:
            raise UnknownModelVersionError(f"{name} has no version {registry_version}") from error
        raise


# --------------------------------------------------------------------------------------------
# Shared checks and file copying


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"a model name is letters, digits, '_', '.' and '-': {name!r}")


def _check_alias(alias: str) -> None:
    if not _ALIAS.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        raise ValueError(
            f"an alias is letters, digits, '_' and '-', not 'latest' nor 'v<n>': {alias!r}"
        )


def _version_number(name: str, registry_version: str) -> int:
    if not registry_version.isdecimal() or int(registry_version) < 1:
        raise UnknownModelVersionError(f"{name} has no version {registry_version!r}")
    return int(registry_version)


def _stage(directory: Path, staging: Path) -> str:
    """Copy the model's files to ``staging`` and return their hash: what is hashed is
    exactly what is stored, even if the source directory changes meanwhile."""
    files = artifact_files(directory)
    if not files:
        raise ValueError(f"no model files in {directory}")
    for relative in files:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / relative, target)
    return artifact_hash(staging)


def _write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _prepare_destination(destination: Path) -> None:
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"download destination is not empty: {destination}")
    destination.mkdir(parents=True, exist_ok=True)
