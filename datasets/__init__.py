"""From solver runs to training data: generation, validation, statistics and loading.

- :func:`generate` runs ensembles of trajectories into sharded CF netCDF files with a
  manifest (atomic, resumable, checksummed, optionally in several processes), on the
  solver's grid or projected onto a coarser one; :func:`coarse_grain` projects a finished
  dataset onto a further coarse grid without simulating again;
- :func:`validate` checks schema, consistency, accuracy and completeness;
- :func:`open_dataset`, :func:`load_trajectories`, :func:`dataset_info` read it back;
- :func:`compute_statistics` / :func:`load_statistics` give training-split normalisation;
- :class:`WindowLoader` serves reproducibly shuffled ``(history -> horizon)`` windows;
  :class:`ArrayLoader` the same from arrays in memory;
- :func:`from_arrays` / :func:`from_xarray` turn trajectories made elsewhere (numpy,
  xarray, a netCDF file) into a dataset, and :func:`statistics_from_arrays` gives their
  statistics.

This package is imported as ``datasets``; ``__hybrid_surrogates__`` tells it apart from
the unrelated PyPI package of the same name.
"""

from datasets.arrays import from_arrays, from_xarray
from datasets.coarsening import coarse_grain
from datasets.generation import generate
from datasets.loading import (
    ArrayLoader,
    NonFiniteDataError,
    WindowLoader,
    dataset_identity,
    dataset_info,
    load_trajectories,
    open_dataset,
)
from datasets.manifest import ManifestError, read_manifest
from datasets.simulate import regenerate_trajectories, regenerate_trajectory
from datasets.statistics import (
    Statistics,
    compute_statistics,
    load_statistics,
    statistics_from_arrays,
)
from datasets.storage import DatasetLockedError, ShardIntegrityError
from datasets.validation import Issue, ValidationReport, validate

__hybrid_surrogates__ = True

__all__ = [
    "ArrayLoader",
    "DatasetLockedError",
    "Issue",
    "ManifestError",
    "NonFiniteDataError",
    "ShardIntegrityError",
    "Statistics",
    "ValidationReport",
    "WindowLoader",
    "coarse_grain",
    "compute_statistics",
    "dataset_identity",
    "dataset_info",
    "from_arrays",
    "from_xarray",
    "generate",
    "load_statistics",
    "load_trajectories",
    "open_dataset",
    "read_manifest",
    "regenerate_trajectories",
    "regenerate_trajectory",
    "statistics_from_arrays",
    "validate",
]
