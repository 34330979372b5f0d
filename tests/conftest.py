from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import DEFAULT_SPEC
from streams.spec import DomainSpec, load_spec


@pytest.fixture(scope="session")
def payments_spec() -> DomainSpec:
    return load_spec(DEFAULT_SPEC)


@pytest.fixture(scope="session")
def spec_path() -> Path:
    return DEFAULT_SPEC
