"""Fixtures: throwaway certificates and tokens, and a TLS + token server on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Credentials, SecureServer, make_credentials, secure_server


@pytest.fixture(scope="module")
def module_credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("security"))


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    return make_credentials(tmp_path)


@pytest.fixture
def server(credentials: Credentials) -> Iterator[SecureServer]:
    with secure_server(credentials) as running:
        yield running
