"""Fixtures of the dataset tests: a tiny Kuramoto-Sivashinsky dataset."""

from __future__ import annotations

import pathlib
import shutil

import pytest

import datasets
from tests.datasets.dataset_helpers import GENERATE, ks_solver

assert getattr(datasets, "__hybrid_surrogates__", False), "imported the wrong 'datasets'"


@pytest.fixture(scope="session")
def ks_dataset(tmp_path_factory) -> pathlib.Path:
    """A complete 6-trajectory KS dataset in 3 shards (read-only: copy before changing)."""
    return datasets.generate(ks_solver(), tmp_path_factory.mktemp("ks") / "data", **GENERATE)


@pytest.fixture
def ks_copy(ks_dataset, tmp_path) -> pathlib.Path:
    """A private copy of the KS dataset, free to corrupt."""
    dst = tmp_path / "copy"
    shutil.copytree(ks_dataset, dst)
    return dst
