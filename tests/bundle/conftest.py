"""Fixtures for bundle tests: one seeded pool for the session (tests only read it or add to it
under their own names)."""

from __future__ import annotations

import pytest

from tests.bundle.corpus import Corpus, build_corpus
from tests.harness.registry import RegistryServer


@pytest.fixture(scope="session")
def corpus(source_registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The pool: four repositories under a prefix of the session's registry."""
    return build_corpus(source_registry, tmp_path_factory.mktemp("corpus"), "bundle-corpus")
