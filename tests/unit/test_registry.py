"""The model registry contract, run against the in-memory registry and the real MLflow one.

``RegistryContract`` holds what every registry does; a subclass says how to open one.
The MLflow registry runs on a sqlite database in the test's directory: MLflow's own
registry code, no server. Creating MLflow's tables takes seconds, so they are created once
per module and each test starts from a copy of that empty database.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from models.registry import (
    AliasDifference,
    InMemoryRegistry,
    MlflowRegistry,
    ModelRegistry,
    RegisteredVersion,
    UnknownModelVersionError,
    artifact_files,
    artifact_hash,
    reconcile,
)

NAME = "payments-fraud"


def make_model(directory: Path, onnx: bytes = b"onnx-graph-1") -> Path:
    """A fake model directory: a few files, one in a subdirectory, and what is not shipped."""
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(onnx)
    (directory / "model.pt").write_bytes(bytes(range(256)) * 4)
    (directory / "metadata.json").write_text('{"name": "payments-fraud", "temperature": 1.5}')
    (directory / "extra").mkdir()
    (directory / "extra" / "calibration.json").write_text('{"bins": [0.1, 0.9]}')
    (directory / "model.plan").write_bytes(b"a TensorRT engine for one device")
    (directory / "__pycache__").mkdir()
    (directory / "__pycache__" / "network.cpython-311.pyc").write_bytes(b"bytecode")
    return directory


def version_of(directory: Path) -> str:
    """What models.scoring.model_version computes, without importing the scoring stack."""
    return hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()[:12]


def contents(directory: Path) -> dict[str, bytes]:
    return {relative: (directory / relative).read_bytes() for relative in artifact_files(directory)}


class RegistryContract:
    """What every registry does. Subclasses provide the ``registry`` fixture."""

    @pytest.fixture
    def registry(self) -> ModelRegistry:
        raise NotImplementedError

    def register(
        self, registry: ModelRegistry, tmp_path: Path, onnx: bytes, name: str = NAME
    ) -> RegisteredVersion:
        directory = make_model(tmp_path / f"{name}-{onnx.decode()}", onnx)
        return registry.register(name, directory, version=version_of(directory))

    def test_an_unknown_model_has_no_versions_and_no_aliases(self, registry: ModelRegistry) -> None:
        assert registry.versions(NAME) == []
        assert registry.aliases(NAME) == {}

    def test_registering_returns_the_ids_and_hash_of_the_model(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        directory = make_model(tmp_path / "model")
        registered = registry.register(NAME, directory, version=version_of(directory))
        assert registered.name == NAME
        assert registered.registry_version == "1"
        assert registered.version == version_of(directory)
        assert registered.artifact_hash == artifact_hash(directory)
        assert registered.artifact_uri

    def test_versions_are_listed_oldest_first_with_increasing_numbers(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        first = self.register(registry, tmp_path, b"graph-1")
        second = self.register(registry, tmp_path, b"graph-2")
        assert registry.versions(NAME) == [first, second]
        assert [v.registry_version for v in (first, second)] == ["1", "2"]
        assert first.version != second.version
        assert first.artifact_hash != second.artifact_hash

    def test_each_model_has_its_own_versions(self, registry: ModelRegistry, tmp_path: Path) -> None:
        fraud = self.register(registry, tmp_path, b"graph-1")
        churn = self.register(registry, tmp_path, b"graph-2", name="churn")
        assert registry.versions(NAME) == [fraud]
        assert registry.versions("churn") == [churn]
        assert churn.registry_version == "1"

    def test_download_gives_the_registered_files(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        directory = make_model(tmp_path / "model")
        registered = registry.register(NAME, directory, version=version_of(directory))
        downloaded = registry.download(NAME, "1", tmp_path / "download" / "model")
        assert downloaded == tmp_path / "download" / "model"
        assert artifact_hash(downloaded) == registered.artifact_hash
        assert contents(downloaded) == contents(directory)
        assert sorted(p.relative_to(downloaded).as_posix() for p in downloaded.rglob("*")) == [
            "extra",
            "extra/calibration.json",
            "metadata.json",
            "model.onnx",
            "model.pt",
        ]  # no engine cache, no bytecode: they are not part of the model

    def test_download_gives_each_version_its_own_files(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        self.register(registry, tmp_path, b"graph-2")
        second = registry.download(NAME, "2", tmp_path / "two")
        first = registry.download(NAME, "1", tmp_path / "one")
        assert (first / "model.onnx").read_bytes() == b"graph-1"
        assert (second / "model.onnx").read_bytes() == b"graph-2"

    def test_the_registered_copy_does_not_follow_the_source_directory(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        directory = make_model(tmp_path / "model")
        registered = registry.register(NAME, directory, version=version_of(directory))
        (directory / "model.onnx").write_bytes(b"retrained in place")
        downloaded = registry.download(NAME, "1", tmp_path / "download")
        assert (downloaded / "model.onnx").read_bytes() == b"onnx-graph-1"
        assert artifact_hash(downloaded) == registered.artifact_hash

    def test_download_into_an_empty_existing_directory(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        registered = self.register(registry, tmp_path, b"graph-1")
        (tmp_path / "empty").mkdir()
        downloaded = registry.download(NAME, "1", tmp_path / "empty")
        assert artifact_hash(downloaded) == registered.artifact_hash

    def test_download_refuses_a_directory_with_files_in_it(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "stale.onnx").write_bytes(b"old")
        with pytest.raises(FileExistsError, match="not empty"):
            registry.download(NAME, "1", tmp_path / "busy")

    @pytest.mark.parametrize(("name", "registry_version"), [(NAME, "2"), ("nobody", "1")])
    def test_download_of_an_unknown_version_is_a_lookup_error(
        self, registry: ModelRegistry, tmp_path: Path, name: str, registry_version: str
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        with pytest.raises(UnknownModelVersionError):
            registry.download(name, registry_version, tmp_path / "download")

    def test_aliases_are_set_moved_and_deleted(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        self.register(registry, tmp_path, b"graph-2")
        assert registry.aliases(NAME) == {}
        registry.set_alias(NAME, "champion", "1")
        assert registry.aliases(NAME) == {"champion": "1"}
        registry.set_alias(NAME, "challenger", "2")
        assert registry.aliases(NAME) == {"champion": "1", "challenger": "2"}
        registry.set_alias(NAME, "champion", "2")  # promotion moves the alias
        assert registry.aliases(NAME) == {"champion": "2", "challenger": "2"}
        registry.delete_alias(NAME, "challenger")
        assert registry.aliases(NAME) == {"champion": "2"}

    def test_deleting_an_absent_alias_does_nothing(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        registry.set_alias(NAME, "champion", "1")
        registry.delete_alias(NAME, "challenger")
        registry.delete_alias("nobody", "champion")
        assert registry.aliases(NAME) == {"champion": "1"}

    def test_aliases_belong_to_one_model(self, registry: ModelRegistry, tmp_path: Path) -> None:
        self.register(registry, tmp_path, b"graph-1")
        self.register(registry, tmp_path, b"graph-2", name="churn")
        registry.set_alias(NAME, "champion", "1")
        assert registry.aliases("churn") == {}

    @pytest.mark.parametrize(("name", "registry_version"), [(NAME, "3"), ("nobody", "1")])
    def test_an_alias_needs_an_existing_version(
        self, registry: ModelRegistry, tmp_path: Path, name: str, registry_version: str
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        with pytest.raises(UnknownModelVersionError):
            registry.set_alias(name, "champion", registry_version)
        assert registry.aliases(NAME) == {}

    @pytest.mark.parametrize("alias", ["latest", "Latest", "v1", "V12", "", "champion/2"])
    def test_reserved_and_malformed_aliases_are_refused(
        self, registry: ModelRegistry, tmp_path: Path, alias: str
    ) -> None:
        self.register(registry, tmp_path, b"graph-1")
        with pytest.raises(ValueError, match="alias"):
            registry.set_alias(NAME, alias, "1")

    @pytest.mark.parametrize("name", ["", "fraud/v2", "fraud:v2", "fraud's", "-fraud"])
    def test_malformed_model_names_are_refused(
        self, registry: ModelRegistry, tmp_path: Path, name: str
    ) -> None:
        directory = make_model(tmp_path / "model")
        with pytest.raises(ValueError, match="model name"):
            registry.register(name, directory, version=version_of(directory))
        with pytest.raises(ValueError, match="model name"):
            registry.aliases(name)

    def test_a_directory_without_model_files_is_refused(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        (tmp_path / "empty" / "__pycache__").mkdir(parents=True)
        (tmp_path / "empty" / "model.plan").write_bytes(b"engine")
        with pytest.raises(ValueError, match="no model files"):
            registry.register(NAME, tmp_path / "empty", version="0123456789ab")
        assert registry.versions(NAME) == []


class TestInMemoryRegistry(RegistryContract):
    @pytest.fixture
    def registry(self) -> ModelRegistry:
        return InMemoryRegistry()


@pytest.fixture(scope="module")
def empty_mlflow_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite database with its tables created, to be copied by each test."""
    database = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowRegistry(f"sqlite:///{database}").aliases(NAME)  # creates the tables
    return database


class TestMlflowRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path: Path, empty_mlflow_database: Path) -> ModelRegistry:
        database = tmp_path / "mlflow" / "mlflow.db"
        database.parent.mkdir()
        shutil.copyfile(empty_mlflow_database, database)
        return MlflowRegistry(f"sqlite:///{database}", (tmp_path / "mlflow" / "artifacts").as_uri())

    def test_versions_carry_our_ids_as_tags_in_mlflow(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        assert isinstance(registry, MlflowRegistry)
        registered = self.register(registry, tmp_path, b"graph-1")
        model_version = registry._client.get_model_version(NAME, "1")
        assert model_version.tags == {
            "headrace.version": registered.version,
            "headrace.artifact_hash": registered.artifact_hash,
        }
        assert model_version.source == registered.artifact_uri
        assert registered.artifact_uri.startswith((tmp_path / "mlflow" / "artifacts").as_uri())
        assert model_version.run_id is not None
        run = registry._client.get_run(model_version.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["headrace.model"] == NAME

    def test_a_second_client_on_the_same_database_sees_the_same_registry(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        assert isinstance(registry, MlflowRegistry)
        registered = self.register(registry, tmp_path, b"graph-1")
        registry.set_alias(NAME, "champion", "1")
        other = MlflowRegistry(registry.tracking_uri)
        assert other.versions(NAME) == [registered]
        assert other.aliases(NAME) == {"champion": "1"}
        registered_again = self.register(other, tmp_path / "again", b"graph-2")
        assert registered_again.registry_version == "2"  # the experiment is found, not remade

    def test_artifacts_lie_beside_a_sqlite_database_by_default(
        self, tmp_path: Path, empty_mlflow_database: Path
    ) -> None:
        database = tmp_path / "registry" / "mlflow.db"
        database.parent.mkdir()
        shutil.copyfile(empty_mlflow_database, database)
        registry = MlflowRegistry(f"sqlite:///{database}")
        registered = self.register(registry, tmp_path, b"graph-1")
        assert registered.artifact_uri.startswith((database.parent / "mlartifacts").as_uri())


# --------------------------------------------------------------------------------------------
# The hash of a model's files


def test_the_hash_is_stable_and_does_not_depend_on_where_the_directory_lies(
    tmp_path: Path,
) -> None:
    first = make_model(tmp_path / "a")
    second = make_model(tmp_path / "elsewhere" / "b")
    assert artifact_hash(first) == artifact_hash(first) == artifact_hash(second)
    assert len(artifact_hash(first)) == 64


def test_the_hash_is_the_sha256_of_length_prefixed_paths_and_contents(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "b.json").write_bytes(b"{}")
    (tmp_path / "m" / "a.onnx").write_bytes(b"graph")
    expected = hashlib.sha256(
        b"\0\0\0\0\0\0\0\6a.onnx\0\0\0\0\0\0\0\5graph\0\0\0\0\0\0\0\6b.json\0\0\0\0\0\0\0\2{}"
    ).hexdigest()
    assert artifact_hash(tmp_path / "m") == expected


def test_the_hash_changes_when_a_file_changes(tmp_path: Path) -> None:
    directory = make_model(tmp_path / "model")
    before = artifact_hash(directory)
    (directory / "extra" / "calibration.json").write_text('{"bins": [0.1, 0.8]}')
    assert artifact_hash(directory) != before


def test_the_hash_changes_when_a_file_is_added_or_renamed(tmp_path: Path) -> None:
    directory = make_model(tmp_path / "model")
    hashes = {artifact_hash(directory)}
    (directory / "notes.txt").write_text("")
    hashes.add(artifact_hash(directory))
    (directory / "notes.txt").rename(directory / "extra" / "notes.txt")
    hashes.add(artifact_hash(directory))
    assert len(hashes) == 3


def test_the_hash_tells_a_name_from_the_content_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "ab").write_bytes(b"c")
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a").write_bytes(b"bc")
    assert artifact_hash(tmp_path / "one") != artifact_hash(tmp_path / "two")


def test_engine_caches_and_bytecode_are_not_part_of_the_model(tmp_path: Path) -> None:
    directory = make_model(tmp_path / "model")
    before = artifact_hash(directory)
    (directory / "model.plan").write_bytes(b"an engine built for another device")
    (directory / "extra" / "cuda.plan").write_bytes(b"another engine")
    (directory / "__pycache__" / "other.pyc").write_bytes(b"more bytecode")
    (directory / "extra" / "__pycache__").mkdir()
    (directory / "extra" / "__pycache__" / "x.json").write_bytes(b"{}")
    assert artifact_hash(directory) == before
    assert artifact_files(directory) == [
        "extra/calibration.json",
        "metadata.json",
        "model.onnx",
        "model.pt",
    ]


def test_the_hash_of_something_other_than_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"graph")
    with pytest.raises(NotADirectoryError):
        artifact_hash(tmp_path / "model.onnx")
    with pytest.raises(NotADirectoryError):
        artifact_hash(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# Reconciling the registry's aliases with the event log


def test_matching_aliases_reconcile_to_nothing() -> None:
    assert (
        reconcile({"champion": "3", "challenger": "4"}, {"challenger": "4", "champion": "3"}) == []
    )


def test_an_alias_pointing_elsewhere_is_a_difference() -> None:
    assert reconcile({"champion": "3"}, {"champion": "2"}) == [
        AliasDifference(alias="champion", expected="3", actual="2")
    ]


def test_a_missing_alias_is_a_difference() -> None:
    assert reconcile({"champion": "3"}, {}) == [
        AliasDifference(alias="champion", expected="3", actual=None)
    ]


def test_an_alias_that_must_not_exist() -> None:
    assert reconcile({"challenger": None}, {}) == []
    assert reconcile({"challenger": None}, {"challenger": "5"}) == [
        AliasDifference(alias="challenger", expected=None, actual="5")
    ]


def test_aliases_the_log_does_not_name_are_left_alone() -> None:
    assert reconcile({"champion": "3"}, {"champion": "3", "staging": "1"}) == []


def test_differences_come_in_alias_order() -> None:
    differences = reconcile(
        {"shadow": None, "champion": "3", "challenger": "4"},
        {"shadow": "2", "challenger": "1"},
    )
    assert [d.alias for d in differences] == ["challenger", "champion", "shadow"]


def test_reconcile_works_on_a_registrys_aliases(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    directory = make_model(tmp_path / "model")
    registry.register(NAME, directory, version=version_of(directory))
    registry.set_alias(NAME, "champion", "1")
    assert reconcile({"champion": "1", "challenger": None}, registry.aliases(NAME)) == []
    registry.delete_alias(NAME, "champion")
    assert reconcile({"champion": "1"}, registry.aliases(NAME)) == [
        AliasDifference(alias="champion", expected="1", actual=None)
    ]
