"""Every kind of netCDF file the project writes passes the IOOS CF-1.10 checker.

Each file kind is produced small (tiny grids, a few frames) and checked through the
compliance-checker's Python API, offline: the test forbids network connections, so the
checker's bundled CF standard-name table is what it uses.

One checker message is known and accepted (:data:`ACCEPTED`): compliance-checker 6.1
demands ``standard_name = "time"`` of any coordinate variable whose *dimension name* is
``time`` (section 5.1 check; CF itself gives names no meaning, see
ioos/compliance-checker#1245 and PR #1353 which removes it). Model time here has no
reference date and is often nondimensional, so it is written as a plain coordinate in
the solver's own units (``datasets.storage.time_coordinate_attrs``); a ``standard_name
= "time"`` would require ``"<unit> since <date>"`` units, i.e. a made-up calendar. The
tests assert that this message is the only one, and only for ``time``.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import socket

import jax
import numpy as np
import pytest

import datasets
from solvers import KuramotoSivashinsky
from surrogate.evaluate import evaluate, record_provenance, save_evaluation
from surrogate.hybrid import EveryK, HybridRunner, InvariantDrift
from tests.datasets.dataset_helpers import GENERATE, Shift2D, ks_solver
from tests.helpers import Damped, Scaled, make_truth

checker = pytest.importorskip("compliance_checker.runner")

# The one accepted checker message (module docstring): about the dimension name "time".
ACCEPTED = {"Coordinate variable 'time' should have standard_name='time', found: 'None'"}
HIGH = 3  # compliance-checker weight of the results its reports list as errors
MONOTONICITY = "check_coordinate_variables_strict_monotonicity"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The checker must work offline (bundled standard-name table, no downloads)."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a CF check")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def cf_errors(path: pathlib.Path) -> list[str]:
    """Messages of the failed high-priority (error) CF-1.10 checks of ``path``."""
    suite = checker.CheckSuite()
    suite.load_all_available_checkers()
    ds = suite.load_dataset(str(path))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        results, failures = suite.run_all(ds, ["cf:1.10"], skip_checks=[])["cf:1.10"]
    # The checker's monotonicity check subtracts coordinate values, so it raises on the
    # string label coordinates (model, variable); its CLI reports "All tests passed!" with
    # a warning about that exception. Any other crash fails the test.
    crashed = {
        name: e
        for name, (e, _) in failures.items()
        if not (name == MONOTONICITY and isinstance(e, TypeError) and "'str'" in str(e))
    }
    assert not crashed, f"checks crashed on {path}: {crashed}"
    out = []
    for r in results:
        if r.weight != HIGH or r.value is None:
            continue
        ok = r.value if isinstance(r.value, bool) else r.value[0] == r.value[1]
        if not ok:
            out.extend(f"{r.name}: {m}" for m in r.msgs)
    return out


def assert_compliant(path: pathlib.Path, *, time_dimension: bool = False) -> None:
    errors = cf_errors(path)
    unexpected = [e for e in errors if e.split(": ", 1)[1] not in ACCEPTED]
    assert not unexpected, f"{path.name}: CF-1.10 errors:\n" + "\n".join(unexpected)
    if not time_dimension:
        assert not errors, f"{path.name}: CF-1.10 errors:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A 1D nondimensional KS dataset and a 2D dataset in metres and seconds."""
    root = tmp_path_factory.mktemp("cf")
    return {
        "ks": datasets.generate(ks_solver(), root / "ks", **GENERATE),
        "shift2d": datasets.generate(
            Shift2D(), root / "s2d", **{**GENERATE, "num_trajectories": 4, "num_frames": 3}
        ),
    }


@pytest.mark.parametrize("name", ["ks", "shift2d"])
def test_dataset_shards_and_statistics(data_dirs, name):
    directory = data_dirs[name]
    shards = sorted(directory.glob("shard-*.nc"))
    assert shards
    for shard in shards:
        assert_compliant(shard, time_dimension=True)
    assert_compliant(directory / "statistics.nc")


def test_the_time_coordinate_is_not_read_as_calendar_time(data_dirs):
    """No time-unit error: time is a plain coordinate with the solver's units."""
    errors = cf_errors(sorted(data_dirs["shift2d"].glob("shard-*.nc"))[0])
    # Only the accepted dimension-name message: no 4.4 time-unit error, no x/y read as
    # longitude/latitude.
    assert errors and all(e.split(": ", 1)[1] in ACCEPTED for e in errors)
    with datasets.open_dataset(data_dirs["shift2d"]) as ds:
        assert ds["time"].attrs["units"] == "s" and ds["time"].dtype == np.float64
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate"
    with datasets.open_dataset(data_dirs["ks"]) as ds:
        assert "axis" not in ds["x"].attrs and ds["x"].attrs["units"] == "1"


@pytest.fixture(scope="module")
def ks():
    return KuramotoSivashinsky(
        num_points=16, domain_length=22.0, dt=1.0, num_substeps=2, initial_max_mode=4
    )


@pytest.mark.integration  # several seconds of compilation
def test_evaluation_nc(ks, data_dirs, tmp_path):
    truth = make_truth(ks, 2, 4, spin_up=2)
    # Every optional table (invariants, blow-up); the coarse baseline adds no new variable.
    ds = evaluate(
        Damped(ks, 0.1),
        truth,
        solver=ks,
        baselines=("persistence",),
        long_rollout_steps=4,
        batch_size=2,
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    ds = record_provenance(ds, dataset=data_dirs["ks"], split="test", bundle=bundle)
    assert_compliant(save_evaluation(ds, tmp_path / "evaluation.nc"))


@pytest.mark.integration  # several seconds of compilation
def test_evaluation_nc_of_variables_in_different_units(tmp_path):
    solver = Shift2D()  # h in m, q in m s-1: no single units attribute for the tables
    x0 = jax.vmap(solver.initial_condition)(jax.random.split(jax.random.key(0), 2))
    frames = [np.asarray(x0)]
    for _ in range(3):
        frames.append(np.asarray(jax.vmap(solver)(frames[-1])))
    truth = np.stack(frames, axis=1)
    ds = evaluate(solver, truth, baselines=(), batch_size=2)
    assert "units" not in ds["rmse"].attrs
    assert_compliant(save_evaluation(ds, tmp_path / "evaluation.nc"))


@pytest.mark.integration  # several seconds of compilation
def test_hybrid_run_nc(ks, tmp_path):
    truth = make_truth(ks, 2, 5, spin_up=2)
    runner = HybridRunner(ks, Scaled(ks, 0.9), EveryK(2), (InvariantDrift("energy"),), chunk_size=2)
    res = runner.run(truth[:, 0], 4, reference=truth)
    res.to_netcdf(tmp_path / "run.nc")
    assert_compliant(tmp_path / "run.nc", time_dimension=True)
