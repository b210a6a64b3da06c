"""From solver runs to training data: generation, validation, statistics and loading.

- :func:`generate` runs ensembles of trajectories into sharded CF netCDF files with a
  manifest (atomic, resumable, checksummed, optionally in several processes);
- :func:`validate` checks schema, consistency, accuracy and completeness;
- :func:`open_dataset`, :func:`load_trajectories`, :func:`dataset_info` read it back;
- :func:`compute_statistics` / :func:`load_statistics` give training-split normalisation;
- :class:`WindowLoader` serves reproducibly shuffled ``(history -> horizon)`` windows.

This package is imported as ``datasets``; ``__hybrid_surrogates__`` tells it apart from
the unrelated PyPI package of the same name.
"""

from datasets.generation import generate, regenerate_trajectories, regenerate_trajectory
from datasets.loading import (
    NonFiniteDataError,
    WindowLoader,
    dataset_identity,
    dataset_info,
    load_trajectories,
    open_dataset,
)
from datasets.manifest import ManifestError, read_manifest
from datasets.statistics import Statistics, compute_statistics, load_statistics
from datasets.storage import DatasetLockedError, ShardIntegrityError
from datasets.validation import Issue, ValidationReport, validate

__hybrid_surrogates__ = True

__all__ = [
    "DatasetLockedError",
    "Issue",
    "ManifestError",
    "NonFiniteDataError",
    "ShardIntegrityError",
    "Statistics",
    "ValidationReport",
    "WindowLoader",
    "compute_statistics",
    "dataset_identity",
    "dataset_info",
    "generate",
    "load_statistics",
    "load_trajectories",
    "open_dataset",
    "read_manifest",
    "regenerate_trajectories",
    "regenerate_trajectory",
    "validate",
]
