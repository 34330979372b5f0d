"""The offline store contract against the real S3 endpoint, and what only S3 does.

Every test writes to a bucket of its own (a uuid), created by the store's first append and
removed afterwards, so tests do not see each other's files or those of a worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import s3fs

from headrace import infra
from tables.offline_store import ParquetOfflineStore
from tests.unit.test_offline_store import MIDNIGHT, OfflineStoreContract, make_row

pytestmark = pytest.mark.integration


def storage_options(endpoint_url: str) -> dict[str, Any]:
    return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint_url}}


class TestS3OfflineStore(OfflineStoreContract):
    @pytest.fixture(autouse=True)
    def own_bucket(self, infrastructure: list[infra.ServiceStatus]) -> Iterator[None]:
        endpoint = next(service.address for service in infrastructure if service.name == "s3")
        self.options = storage_options(endpoint)
        self.bucket = f"test-offline-{uuid.uuid4().hex}"
        self.fs = s3fs.S3FileSystem(**self.options)
        yield
        self.fs.invalidate_cache()
        if self.fs.exists(self.bucket):
            self.fs.rm(self.bucket, recursive=True)

    def create_store(self) -> ParquetOfflineStore:
        return ParquetOfflineStore(f"s3://{self.bucket}/features", storage_options=self.options)

    def test_the_first_append_creates_the_bucket_and_reading_does_not(self) -> None:
        store = self.create_store()
        assert store.read().num_rows == 0
        assert not self.fs.exists(self.bucket)
        paths = store.append([make_row("card-1", MIDNIGHT)], writer_id="s3")
        self.fs.invalidate_cache()
        assert self.fs.exists(self.bucket)
        assert paths[0].startswith(f"{self.bucket}/features/date=2026-01-01/hour=00/part-s3-")
        assert self.fs.find(self.bucket) == paths

    def test_a_bucket_made_elsewhere_is_used(self) -> None:
        self.fs.mkdir(self.bucket)
        store = self.create_store()
        store.append([make_row("card-1", MIDNIGHT)])
        assert store.read().num_rows == 1
