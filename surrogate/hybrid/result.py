"""The result of a hybrid run: trajectories, the per-step engine log, summaries, netCDF I/O.

:class:`HybridResult` is what :meth:`surrogate.hybrid.HybridRunner.run` returns. It
writes itself as a CF-1.10 netCDF file (:meth:`HybridResult.to_netcdf`) and reads one
back (:meth:`HybridResult.from_netcdf`), so a run can be analysed without rerunning it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any

import numpy as np

from solvers.grid import Grid
from surrogate.hybrid.chunk import ENGINE_NAMES, ENGINE_SURROGATE


@dataclasses.dataclass
class HybridResult:
    """Trajectories and per-step log of a hybrid run.

    Attributes:
        states: ``(B, N + 1, C, *spatial)`` frames, initial state first (state units).
        engine: ``(B, N)`` int8, engine of step ``n`` (frame ``n`` -> ``n + 1``): 0 solver
            (scheduled), 1 surrogate (accepted), 2 fallback (proposal non-finite or blown
            up, redone by the solver), 3 rollback (proposal rejected by an indicator,
            redone by the solver).
        tripped: ``(B, N)`` bool, an indicator checked by the policy exceeded its threshold
            at that step's check.
        indicator_values: name -> ``(B, N)`` float64 value at each check (NaN at steps
            without a check: scheduled solver steps, inner steps of a block).
        indicator_attrs: name -> ``{"units", "long_name"}``.
        chunk_wall_time: ``(K,)`` seconds per compiled chunk (compile excluded).
        chunk_first_step, chunk_num_steps: ``(K,)`` the steps each chunk covered.
        wall_time: seconds of the whole run (compile excluded).
        compile_time: seconds spent compiling for this run (0 when cached).
        dt, t0, time_units: time axis ``t0 + n dt``.
        variables, units, long_names, grid: state metadata.
        config: the runner's configuration (:meth:`HybridRunner.config`).
        rmse: variable -> ``(B, N + 1)`` RMSE against the reference, or ``None``.
    """

    states: np.ndarray
    engine: np.ndarray
    tripped: np.ndarray
    indicator_values: dict[str, np.ndarray]
    indicator_attrs: dict[str, dict[str, str]]
    chunk_wall_time: np.ndarray
    chunk_first_step: np.ndarray
    chunk_num_steps: np.ndarray
    wall_time: float
    compile_time: float
    dt: float
    t0: float
    variables: tuple[str, ...]
    units: dict[str, str]
    long_names: dict[str, str]
    grid: Any
    time_units: str
    config: dict[str, Any]
    rmse: dict[str, np.ndarray] | None = None

    # ---- summaries -----------------------------------------------------------------------
    @property
    def num_trajectories(self) -> int:
        """``B``, the members of the run."""
        return int(self.states.shape[0])

    @property
    def num_steps(self) -> int:
        """``N``, the steps of ``dt`` taken."""
        return int(self.engine.shape[1])

    @property
    def times(self) -> np.ndarray:
        """``(N + 1,)`` model time of each frame, ``t0 + n dt`` (in ``time_units``)."""
        return self.t0 + self.dt * np.arange(self.num_steps + 1)

    @property
    def solver_fraction(self) -> float:
        """Fraction of member-steps whose frame came from the solver (codes 0, 2, 3)."""
        return float(np.mean(self.engine != ENGINE_SURROGATE))

    def engine_counts(self) -> dict[str, int]:
        """Member-steps per engine; they add up to ``B * N``."""
        return {name: int(np.sum(self.engine == code)) for code, name in enumerate(ENGINE_NAMES)}

    def step_wall_time(self) -> np.ndarray:
        """``(N,)`` wall time per step: each chunk's time spread evenly over its steps."""
        return np.repeat(self.chunk_wall_time / self.chunk_num_steps, self.chunk_num_steps)

    def first_nonfinite_frame(self) -> np.ndarray:
        """``(B,)`` index of the first frame with NaN/Inf per trajectory, -1 if none."""
        bad = ~np.isfinite(self.states.reshape(self.num_trajectories, self.num_steps + 1, -1))
        any_bad = bad.any(-1)
        return np.where(any_bad.any(1), any_bad.argmax(1), -1)

    def summary(self, baseline: HybridResult | None = None) -> dict[str, Any]:
        """Solver fraction, engine counts, wall and compile time, and the speed-up against a
        ``baseline`` run (e.g. :meth:`HybridRunner.run_solver_only`) when given."""
        out = {
            "num_trajectories": self.num_trajectories,
            "num_steps": self.num_steps,
            "solver_fraction": self.solver_fraction,
            "engine_counts": self.engine_counts(),
            "wall_time": self.wall_time,
            "compile_time": self.compile_time,
            "wall_time_per_step": self.wall_time / self.num_steps,
        }
        if self.rmse is not None:
            out["final_rmse"] = {v: float(np.mean(r[:, -1])) for v, r in self.rmse.items()}
        if baseline is not None:
            out["baseline_wall_time"] = baseline.wall_time
            out["speedup"] = baseline.wall_time / self.wall_time
        return out

    # ---- xarray / netCDF -------------------------------------------------------------------
    def to_xarray(self):
        """The result as an ``xarray.Dataset``.

        Variables: one per state variable with dims ``(trajectory, time, *grid axes)``;
        ``engine``, ``tripped`` and ``indicator_<name>`` with dims ``(trajectory, step)``
        (step ``n`` produces frame ``n``, ``n = 1..N``); ``rmse_<variable>`` with dims
        ``(trajectory, time)`` when a reference was given; ``chunk_wall_time``,
        ``chunk_first_step``, ``chunk_num_steps`` with dim ``chunk`` and ``wall_time``
        with dim ``step``. Attributes hold the runner config (JSON) and the summary.
        """
        import xarray as xr

        from datasets.storage import spatial_coordinate_attrs, time_coordinate_attrs

        axes = tuple(self.grid.axes)
        coords: dict[str, Any] = {
            "trajectory": (
                "trajectory",
                np.arange(self.num_trajectories),
                {"long_name": "member index of the run", "units": "1"},
            ),
            "time": ("time", self.times, time_coordinate_attrs(self.time_units, "model time")),
            "step": (
                "step",
                np.arange(1, self.num_steps + 1),
                {"long_name": "step index n (advances frame n - 1 to frame n)", "units": "1"},
            ),
            "chunk": (
                "chunk",
                np.arange(len(self.chunk_wall_time)),
                {"long_name": "index of a compiled chunk of steps", "units": "1"},
            ),
        }
        grid_coords = self.grid.coords()
        for i, a in enumerate(axes):
            coords[a] = (
                a,
                grid_coords[a],
                spatial_coordinate_attrs(a, self.grid.long_names[i], self.grid.length_units),
            )
        data: dict[str, Any] = {}
        for i, v in enumerate(self.variables):
            data[v] = (
                ("trajectory", "time", *axes),
                self.states[:, :, i],
                {"units": self.units[v], "long_name": self.long_names[v]},
            )
        data["engine"] = (
            ("trajectory", "step"),
            self.engine.astype(np.int8),
            {
                "long_name": "engine that produced the step",
                "flag_values": np.arange(len(ENGINE_NAMES), dtype=np.int8),
                "flag_meanings": " ".join(ENGINE_NAMES),
                "units": "1",
            },
        )
        data["tripped"] = (
            ("trajectory", "step"),
            self.tripped.astype(np.int8),
            {"long_name": "a policy indicator exceeded its threshold (1) or not (0)", "units": "1"},
        )
        for name, values in self.indicator_values.items():
            data[f"indicator_{name}"] = (
                ("trajectory", "step"),
                values,
                dict(self.indicator_attrs[name]),
            )
        data["wall_time"] = (
            "step",
            self.step_wall_time(),
            {"units": "s", "long_name": "wall time per step (chunk time spread evenly)"},
        )
        data["chunk_wall_time"] = (
            "chunk",
            self.chunk_wall_time,
            {"units": "s", "long_name": "wall time of the chunk"},
        )
        data["chunk_first_step"] = (
            "chunk",
            self.chunk_first_step,
            {"units": "1", "long_name": "first step of the chunk"},
        )
        data["chunk_num_steps"] = (
            "chunk",
            self.chunk_num_steps,
            {"units": "1", "long_name": "steps in the chunk"},
        )
        if self.rmse is not None:
            for v, r in self.rmse.items():
                data[f"rmse_{v}"] = (
                    ("trajectory", "time"),
                    r,
                    {"units": self.units[v], "long_name": f"RMSE of {v} against the reference"},
                )
        from datasets.plumbing import package_version

        summary = self.summary()
        attrs = {
            "title": "hybrid solver/surrogate run",
            "Conventions": "CF-1.10",
            "history": "written by surrogate.hybrid.HybridResult.to_xarray",
            "dt": self.dt,
            "t0": self.t0,
            "wall_time": self.wall_time,
            "compile_time": self.compile_time,
            "solver_fraction": self.solver_fraction,
            "engine_counts": json.dumps(summary["engine_counts"]),
            "engine_codes": json.dumps(dict(enumerate(ENGINE_NAMES))),
            "policy": json.dumps(self.config.get("policy", {}), default=str),
            "indicators": json.dumps(self.config.get("indicators", []), default=str),
            "runner_config": json.dumps(self.config, default=str),
            "variables": json.dumps(list(self.variables)),
            "grid": json.dumps(self.grid.to_dict() if hasattr(self.grid, "to_dict") else {}),
            "package_version": package_version(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        for name in ds.coords:  # CF 2.5.1: coordinate variables carry no _FillValue
            ds[name].encoding["_FillValue"] = None
        return ds

    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_xarray` to netCDF atomically (temporary file, then rename)."""
        from datasets.plumbing import atomic_path

        with atomic_path(path, fsync=False, sync_directory=False) as tmp:
            self.to_xarray().to_netcdf(tmp)

    @classmethod
    def from_xarray(cls, ds) -> HybridResult:
        """Rebuild a result from :meth:`to_xarray` output (e.g. a reopened netCDF file).

        Raises:
            ValueError: the dataset lacks an attribute or variable that :meth:`to_xarray`
                writes (each missing one named, with the file when known).
        """
        source = ds.encoding.get("source", "the dataset")
        needed_attrs = (
            "variables",
            "grid",
            "runner_config",
            "wall_time",
            "compile_time",
            "dt",
            "t0",
        )
        missing = [f"attribute {a!r}" for a in needed_attrs if a not in ds.attrs]
        if not missing:
            names = json.loads(ds.attrs["variables"])
            needed = (*names, "time", "engine", "tripped", "chunk_wall_time")
            missing = [f"variable {v!r}" for v in needed if v not in ds.variables]
        if missing:
            raise ValueError(
                f"HybridResult.from_xarray: {source} is not a hybrid run written by "
                f"HybridResult.to_netcdf: it lacks {', '.join(missing)}"
            )
        variables = tuple(json.loads(ds.attrs["variables"]))
        g = json.loads(ds.attrs["grid"])
        grid = Grid(
            tuple(g["num_points"]),
            tuple(g["domain_length"]),
            tuple(g["axes"]),
            g.get("length_units", "1"),
            tuple(g["long_names"]) if g.get("long_names") else None,
        )
        states = np.stack([ds[v].values for v in variables], axis=2)
        names = [k[len("indicator_") :] for k in ds.data_vars if k.startswith("indicator_")]
        rmse_keys = [f"rmse_{v}" for v in variables]
        rmse = (
            {v: ds[f"rmse_{v}"].values for v in variables}
            if all(k in ds for k in rmse_keys)
            else None
        )
        return cls(
            states=states,
            engine=ds["engine"].values.astype(np.int8),
            tripped=ds["tripped"].values.astype(bool),
            indicator_values={n: ds[f"indicator_{n}"].values for n in names},
            indicator_attrs={
                n: {
                    "units": ds[f"indicator_{n}"].attrs.get("units", ""),
                    "long_name": ds[f"indicator_{n}"].attrs.get("long_name", n),
                }
                for n in names
            },
            chunk_wall_time=ds["chunk_wall_time"].values,
            chunk_first_step=ds["chunk_first_step"].values,
            chunk_num_steps=ds["chunk_num_steps"].values,
            wall_time=float(ds.attrs["wall_time"]),
            compile_time=float(ds.attrs["compile_time"]),
            dt=float(ds.attrs["dt"]),
            t0=float(ds.attrs["t0"]),
            variables=variables,
            units={v: ds[v].attrs.get("units", "1") for v in variables},
            long_names={v: ds[v].attrs.get("long_name", v) for v in variables},
            grid=grid,
            time_units=ds["time"].attrs.get("units", "1"),
            config=json.loads(ds.attrs["runner_config"]),
            rmse=rmse,
        )

    @classmethod
    def from_netcdf(cls, path: str | os.PathLike) -> HybridResult:
        """Read a file written by :meth:`to_netcdf`."""
        import xarray as xr

        with xr.open_dataset(path) as ds:
            loaded = ds.load()
            loaded.encoding["source"] = str(path)
            return cls.from_xarray(loaded)


__all__ = ["HybridResult"]
