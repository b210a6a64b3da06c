"""Four-part data-quality validation of a dataset directory. It reports; it never writes.

1. **schema**: every shard is a readable netCDF4 file with the variables, dimensions,
   dtypes, units, long names, CF and provenance attributes the conventions require.
2. **consistency**: shards agree with the manifest and hence with each other (solver,
   config, dt, precision, seed, grid coordinates, time axis, trajectory indices), and
   their sha256 checksums and sizes match the manifest.
3. **accuracy**: a seeded sample of trajectories re-simulated from the recorded
   provenance reproduces the stored frames (a coarse-grained dataset: re-simulated on the
   recorded fine grid and projected with the recorded filter, whose record must agree
   with the stored grid and the solver); conserved diagnostics stay constant along
   every stored trajectory (both skipped, and listed in the check's ``skipped``, for
   data imported with :func:`datasets.from_arrays` / :func:`datasets.from_xarray`: no
   solver is known); every value lies within a plausible range derived, robustly,
   from the training split (:data:`PLAUSIBLE_RANGE_FACTOR`).
4. **completeness**: every shard and trajectory is there (or recorded as skipped), at
   least one is stored, with every frame, no NaN/Inf, no constant trajectory and no
   repeated consecutive frame.

Corrupt inputs (a truncated file, an HTML page saved as ``.nc``, a flipped byte, a
missing shard, a removed attribute) are reported as issues naming the file, variable or
trajectory, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from datasets import storage
from datasets.manifest import (
    MANIFEST_NAME,
    STATISTICS_NAME,
    dataset_dir,
    fingerprint,
    read_manifest,
    stored_ids,
    stored_trajectories,
)
from solvers.stepper import Stepper

CHECKS = ("schema", "consistency", "accuracy", "completeness")
REQUIRED_ATTRS = (
    "Conventions",
    "title",
    "history",
    "source",
    "solver",
    "solver_config",
    "precision",
    "dt",
    "seed",
    "spinup_steps",
    "package_version",
)
# Data imported with datasets.from_arrays / from_xarray have no solver, seed or spin-up.
SOLVER_ATTRS = ("solver", "solver_config", "seed", "spinup_steps")
# Diagnostics that are invariants of every solver that reports them, used when a solver
# class does not declare ``conserved`` itself: the domain mean of a conservation law on a
# periodic domain (``mass``), and the mean vorticity of periodic 2D flow.
CONSERVED_BY_CONVENTION = ("mass", "mean_vorticity")
# Re-simulation on the same software stack is bit-for-bit (measured: vmap batch size and
# process do not change a bit). 1000 eps of slack admits reordered floating-point
# operations of another XLA build over the first frames; chaotic divergence beyond that
# is reported, with the library versions, rather than hidden by a loose tolerance.
RESIMULATION_EPS_FACTOR = 1000.0
# Plausible range of each variable: within this many robust standard deviations ``s`` of
# its typical value ``m``. Per trajectory ``i`` of the training split, ``rms_i`` is the
# RMS of ``u - m`` over frames and grid points; ``m`` is the median over those
# trajectories of their means and ``s`` the median of ``rms_i``, so a minority of bad
# trajectories cannot widen its own bound. Chaotic fields stay within about 5 s; a
# decaying field whose early frames dominate within about sqrt(T) s. 50 flags storage
# or solver failures (1e30, a scaled copy) without false alarms on physical extremes.
PLAUSIBLE_RANGE_FACTOR = 50.0


@dataclasses.dataclass(frozen=True)
class Issue:
    """One finding: which check, where (file, file:variable, trajectory i), what."""

    check: str
    location: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.location}: {self.message}"


@dataclasses.dataclass
class CheckResult:
    """Outcome of one check: the issues found and notes on what was examined."""

    name: str
    issues: list[Issue] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)


@dataclasses.dataclass
class ValidationReport:
    """All four checks of one dataset; ``passed`` when none has an error."""

    path: pathlib.Path
    checks: dict[str, CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    def issues(self, check: str | None = None) -> list[Issue]:
        """Issues of one check, or of all."""
        names = CHECKS if check is None else (check,)
        return [i for n in names for i in self.checks[n].issues]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "passed": self.passed,
            "checks": {
                n: {
                    "passed": c.passed,
                    "issues": [dataclasses.asdict(i) for i in c.issues],
                    "notes": c.notes,
                    "skipped": c.skipped,
                }
                for n, c in self.checks.items()
            },
        }

    def __str__(self) -> str:
        lines = [f"validation of {self.path}: {'PASSED' if self.passed else 'FAILED'}"]
        for name, c in self.checks.items():
            errors = sum(i.severity == "error" for i in c.issues)
            status = "pass" if c.passed else f"FAIL ({errors} error(s))"
            lines.append(f"  {name:<13} {status}")
            lines += [f"      {i}" for i in c.issues]
            lines += [f"      note: {n}" for n in c.notes]
            lines += [f"      skipped: {n}" for n in c.skipped]
        return "\n".join(lines)


class _Checker:
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.results = {n: CheckResult(n) for n in CHECKS}

    def error(self, check: str, location: str, message: str) -> None:
        self.results[check].issues.append(Issue(check, location, message))

    def warn(self, check: str, location: str, message: str) -> None:
        self.results[check].issues.append(Issue(check, location, message, "warning"))

    def note(self, check: str, message: str) -> None:
        self.results[check].notes.append(message)

    def report(self) -> ValidationReport:
        return ValidationReport(self.directory, self.results)


def validate(
    path: str | pathlib.Path,
    *,
    num_resimulate: int = 2,
    seed: int = 0,
    tolerance: float | None = None,
    solver: Stepper = None,
) -> ValidationReport:
    """Run the four checks on a dataset directory and report; never modifies it.

    Args:
        path: dataset directory (or its ``manifest.json``).
        num_resimulate: trajectories re-simulated for the accuracy check (0: none).
        seed: seed of the sample of re-simulated trajectories.
        tolerance: accepted ``max |stored - resimulated| / max |stored|`` per trajectory;
            default ``1000 * eps`` of the stored precision (1.2e-4 for float32, 2.2e-13
            for float64).
        solver: the solver to re-simulate with, instead of rebuilding it from the
            manifest: for solvers that cannot be rebuilt from their provenance (a class
            or a step function defined in a script, :func:`solvers.from_exponax`). Its
            ``name`` and ``config()`` must equal the recorded ones (an error otherwise).

    Returns:
        A :class:`ValidationReport` (``report.passed``, ``str(report)``).
    """
    directory = dataset_dir(path)
    chk = _Checker(directory)
    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError) as e:
        chk.error("consistency", MANIFEST_NAME, str(e))
        for name in ("schema", "accuracy", "completeness"):
            chk.error(name, MANIFEST_NAME, "not checked: no readable manifest")
        return chk.report()
    if not _check_manifest(chk, manifest):
        return chk.report()
    layout, spec = manifest["layout"], manifest["spec"]
    eps = float(np.finfo(np.dtype(layout["precision"])).eps)
    tolerance = RESIMULATION_EPS_FACTOR * eps if tolerance is None else float(tolerance)
    external = manifest["solver"] is None  # imported with from_arrays / from_xarray
    if external:
        source = spec.get("source") or {}
        chk.results["accuracy"].skipped.append(
            "re-simulation: no solver is known (data imported with datasets."
            f"{source.get('function', 'from_arrays')} from "
            f"{source.get('origin') or source.get('description') or 'in-memory data'}); "
            "conserved diagnostics not checked either"
        )
    solver = None if external else _rebuild(chk, manifest, solver)
    diagnose = None
    if solver is not None:
        coarse = spec.get("coarse_graining") is not None
        diagnose = _diagnostics_fn(chk, solver, layout, lift=coarse)
    rng = np.random.default_rng(seed)
    stored = stored_trajectories(manifest)
    sample = set(
        rng.choice(stored, size=min(num_resimulate, stored.size), replace=False).tolist()
        if stored.size
        else []
    )
    found: dict[int, np.ndarray] = {}
    ranges = _Ranges(layout["variables"])
    for shard in manifest["shards"]:
        data = _check_shard(chk, manifest, shard)
        if data is None:
            continue
        ids = np.asarray(stored_ids(shard), dtype=np.int64)
        if ids.size == 0:
            continue  # every trajectory of the shard was skipped (recorded in the manifest)
        finite = _check_frames(chk, manifest, shard, ids, data)
        ranges.add(shard["file"], ids[finite], data[finite])
        if diagnose is not None:
            _check_conservation(chk, layout, spec, ids, data, diagnose)
        for row, i in enumerate(ids.tolist()):
            if i in sample:
                found[i] = data[row]
    _check_coverage(chk, manifest)
    train = manifest["splits"].get("train")
    ranges.check(chk, range(*train) if train else None)
    _check_strays(chk, manifest)
    if solver is not None:
        _check_resimulation(chk, manifest, solver, sorted(sample), found, tolerance)
    elif sample and not external:
        chk.error(
            "accuracy",
            "solver",
            "not re-simulated: the solver could not be rebuilt, or its provenance (e.g. "
            "coarse_graining) cannot be reproduced (see above)",
        )
    return chk.report()


# ---- manifest ---------------------------------------------------------------------------
def _check_manifest(chk: _Checker, m: Mapping[str, Any]) -> bool:
    """Self-consistency of the manifest; False when too broken to go on."""
    loc = MANIFEST_NAME
    spec, layout = m["spec"], m["layout"]
    needed_spec = (
        "num_trajectories",
        "num_frames",
        "seed",
        "spinup_steps",
        "trajectories_per_shard",
    )
    needed_layout = ("variables", "units", "long_names", "time_units", "grid", "dt", "precision")
    missing = [f"spec.{k}" for k in needed_spec if k not in spec]
    missing += [f"layout.{k}" for k in needed_layout if k not in layout]
    if missing:
        chk.error("consistency", loc, f"manifest lacks {missing}")
        for name in ("schema", "accuracy", "completeness"):
            chk.error(name, loc, "not checked: manifest incomplete")
        return False
    n, tps = spec["num_trajectories"], spec["trajectories_per_shard"]
    if m["solver"] != spec.get("solver") or m["solver_config"] != spec.get("solver_config"):
        chk.error("consistency", loc, "solver/solver_config differ between the top level and spec")
    if m.get("coarse_graining") != spec.get("coarse_graining"):
        chk.error("consistency", loc, "coarse_graining differs between the top level and spec")
    ranges = sorted(m["splits"].items(), key=lambda kv: kv[1][0])
    at = 0
    for name, (lo, hi) in ranges:
        if lo != at or hi < lo:
            chk.error("consistency", loc, f"split {name!r} = [{lo}, {hi}) leaves a gap or overlaps")
        at = hi
    if at != n:
        chk.error("consistency", loc, f"splits cover [0, {at}), not all {n} trajectories")
    for s in m["shards"]:
        k = s.get("index")
        expected = [k * tps, min(k * tps + tps, n)] if isinstance(k, int) else None
        if s.get("trajectories") != expected or s.get("file") != storage.shard_name(k or 0):
            chk.error(
                "consistency",
                loc,
                f"shard record {s.get('file')!r} covers {s.get('trajectories')}, expected "
                f"{storage.shard_name(k or 0)!r} with {expected}",
            )
    if not m.get("created"):
        chk.error("schema", loc, "manifest has no 'created' timestamp")
    return True


def _rebuild(chk: _Checker, manifest: Mapping[str, Any], given: Any = None):
    """The recorded (fine) solver, or None when it cannot reproduce the stored frames.

    ``given`` (the ``solver`` argument of :func:`validate`) is used instead of rebuilding
    when its name and config are the recorded ones.
    """
    from datasets.provenance import rebuild_solver, solver_layout, stored_num_points
    from datasets.simulate import precision_scope

    if given is not None:
        got = (getattr(given, "name", None), storage.normalise(given.config()))
        if got != (manifest["solver"], manifest["solver_config"]):
            chk.error(
                "accuracy",
                "solver",
                f"the solver passed to validate ({got[0]!r}, config {got[1]}) is not the "
                f"recorded one ({manifest['solver']!r}, config {manifest['solver_config']})",
            )
            return None
        solver = given
    else:
        try:
            with precision_scope(manifest["layout"]["precision"]):
                solver = rebuild_solver(manifest, chk.directory / MANIFEST_NAME)
        except Exception as e:  # noqa: BLE001 - reported, whatever the solver raises
            chk.error(
                "accuracy",
                "solver",
                f"cannot rebuild solver {manifest['solver']!r} from the stored solver_config: "
                f"{type(e).__name__}: {e}; if the solver cannot be rebuilt from its "
                "provenance, pass it: datasets.validate(path, solver=...)",
            )
            return None
    if not _check_coarse_graining(chk, manifest, solver):
        return None
    layout = solver_layout(solver, stored_num_points(manifest["spec"]))
    for key in ("variables", "units", "long_names", "time_units", "grid", "dt", "precision"):
        if layout[key] != manifest["layout"][key]:
            chk.error(
                "consistency",
                MANIFEST_NAME,
                f"layout.{key} = {manifest['layout'][key]!r} but the rebuilt solver gives "
                f"{layout[key]!r} (solver code changed since generation?)",
            )
    return solver


def _check_coarse_graining(chk: _Checker, m: Mapping[str, Any], solver) -> bool:
    """A coarse-grained dataset's record names a known filter and agrees with its grids.

    The stored grid must be the record's ``num_points`` and the rebuilt solver's grid its
    ``fine_num_points``; a record that is consistent but false (another fine grid in both
    the record and ``solver_config``) fails the re-simulation instead. True when the
    dataset is not coarse-grained.
    """
    from datasets.provenance import stored_num_points

    record = m["spec"].get("coarse_graining")
    if record is None:
        return True
    loc = MANIFEST_NAME
    try:
        coarse = list(stored_num_points(m["spec"]) or ())
    except ValueError as e:
        chk.error("accuracy", loc, f"{e}; not re-simulated")
        return False
    fine = [int(n) for n in solver.grid.num_points]
    grid = list(m["layout"]["grid"]["num_points"])
    ok = True
    if coarse != grid:
        chk.error(
            "consistency",
            loc,
            f"coarse_graining.num_points = {coarse} differs from the stored grid "
            f"(layout.grid) {grid}",
        )
        ok = False
    if record["fine_num_points"] != fine:
        chk.error(
            "consistency",
            loc,
            f"coarse_graining.fine_num_points = {record['fine_num_points']} differs from "
            f"the grid {fine} of the solver that solver_config builds",
        )
        ok = False
    if len(coarse) != len(fine) or any(c > f for c, f in zip(coarse, fine, strict=False)):
        chk.error(
            "consistency",
            loc,
            f"coarse_graining.num_points = {coarse} is not a coarsening of the solver's "
            f"grid {fine}",
        )
        ok = False
    return ok


# ---- one shard: schema + consistency ----------------------------------------------------
def _check_shard(chk: _Checker, m: Mapping[str, Any], shard: Mapping[str, Any]):
    """Checksum, schema and metadata consistency of one shard; its data if readable."""
    name = shard["file"]
    path = chk.directory / name
    if not path.is_file():
        chk.error("consistency", name, "shard file listed in the manifest is missing")
        chk.error(
            "completeness",
            name,
            f"trajectories {shard['trajectories'][0]}..{shard['trajectories'][1] - 1} missing "
            "(shard file absent)",
        )
        return None
    size = path.stat().st_size
    if size != shard.get("size"):
        chk.error("consistency", name, f"size {size} bytes, manifest records {shard.get('size')}")
    digest = storage.cached_sha256(path)  # a later loader in this process need not re-read
    if digest != shard.get("sha256"):
        chk.error(
            "consistency",
            name,
            f"sha256 {digest[:16]}... does not match the manifest's "
            f"{str(shard.get('sha256'))[:16]}... (file changed or corrupted)",
        )
    problem = storage.open_hdf5_check(path)
    if problem is not None:
        chk.error("schema", name, f"cannot open: {problem}")
        chk.error("completeness", name, "trajectories unreadable (see schema)")
        return None
    import netCDF4

    try:
        with netCDF4.Dataset(path, "r") as nc:
            nc.set_auto_mask(False)
            _schema(chk, m, name, nc)
            _consistency(chk, m, shard, name, nc)
            layout = m["layout"]
            expected = (
                len(stored_ids(shard)),
                m["spec"]["num_frames"],
                *layout["grid"]["num_points"],
            )
            data = []
            for v in layout["variables"]:
                if v not in nc.variables or tuple(nc.variables[v].shape) != expected:
                    chk.error(
                        "completeness",
                        f"{name}:{v}",
                        f"variable absent or of shape "
                        f"{tuple(nc.variables[v].shape) if v in nc.variables else None}, "
                        f"expected {expected} (trajectory, time, *grid)",
                    )
                    return None
                data.append(np.asarray(nc.variables[v][:]))
    except Exception as e:  # noqa: BLE001 - netCDF4 raises many types; all mean corrupt
        chk.error("schema", name, f"corrupt netCDF4 content: {type(e).__name__}: {e}")
        chk.error("completeness", name, "trajectories unreadable (see schema)")
        return None
    return np.stack(data, axis=2)


def _schema(chk: _Checker, m: Mapping[str, Any], name: str, nc) -> None:
    layout = m["layout"]
    attrs = _global_attrs(nc)
    solver_free = m["solver"] is None
    for key in REQUIRED_ATTRS:
        if key not in attrs and not (solver_free and key in SOLVER_ATTRS):
            chk.error("schema", name, f"global attribute {key!r} missing")
    if "Conventions" in attrs and not str(attrs["Conventions"]).startswith("CF-"):
        chk.error("schema", name, f"Conventions = {attrs['Conventions']!r}, expected 'CF-1.x'")
    for key in ("solver_config", "config"):
        if key in attrs:
            try:
                if not isinstance(json.loads(attrs[key]), dict):
                    raise ValueError("not an object")
            except (TypeError, ValueError) as e:
                chk.error("schema", name, f"global attribute {key!r} is not a JSON object: {e}")
    if "precision" in attrs and attrs["precision"] not in ("float32", "float64"):
        chk.error("schema", name, f"precision = {attrs['precision']!r}, not float32/float64")
    if "dt" in attrs and not (
        np.isscalar(attrs["dt"]) and np.isfinite(attrs["dt"]) and attrs["dt"] > 0
    ):
        chk.error("schema", name, f"dt = {attrs['dt']!r} is not a positive number")
    for key in ("seed", "spinup_steps"):
        if key in attrs and not (isinstance(attrs[key], int | np.integer) and attrs[key] >= 0):
            chk.error("schema", name, f"{key} = {attrs[key]!r} is not an int >= 0")
    axes = tuple(layout["grid"]["axes"])
    dims = ("trajectory", "time", *axes)
    for d in dims:
        if d not in nc.dimensions:
            chk.error("schema", name, f"dimension {d!r} missing")
    for v in layout["variables"]:
        loc = f"{name}:{v}"
        if v not in nc.variables:
            chk.error("schema", loc, "data variable missing")
            continue
        var = nc.variables[v]
        if tuple(var.dimensions) != dims:
            chk.error("schema", loc, f"dims {tuple(var.dimensions)}, expected {dims}")
        if np.dtype(var.dtype) != np.dtype(layout["precision"]):
            chk.error("schema", loc, f"dtype {var.dtype}, expected {layout['precision']}")
        for a in ("units", "long_name"):
            if a not in var.ncattrs() or not isinstance(var.getncattr(a), str):
                chk.error("schema", loc, f"attribute {a!r} missing")
    known = {"trajectory", "split", "time", *axes}  # split: optional (older shards lack it)
    extra = set(nc.variables) - set(layout["variables"]) - known
    for v in sorted(extra):
        chk.warn("schema", f"{name}:{v}", "unexpected variable")
    for c in ("trajectory", "time", *axes):
        loc = f"{name}:{c}"
        if c not in nc.variables:
            chk.error("schema", loc, "coordinate variable missing")
            continue
        var = nc.variables[c]
        if c == "trajectory" and not np.issubdtype(var.dtype, np.integer):
            chk.error("schema", loc, f"dtype {var.dtype}, expected an integer type")
        for a in ("units", "long_name"):
            if a not in var.ncattrs():
                chk.error("schema", loc, f"attribute {a!r} missing")


def _consistency(chk: _Checker, m: Mapping[str, Any], shard: Mapping, name: str, nc) -> None:
    layout, spec = m["layout"], m["spec"]
    attrs = _global_attrs(nc)
    expected = {
        "solver": m["solver"],
        "precision": layout["precision"],
        "seed": spec["seed"],
        "spinup_steps": spec["spinup_steps"],
        "package_version": spec.get("package_version"),
        "shard_index": shard["index"],
    }
    for key, want in expected.items():
        if key in attrs and attrs[key] != want:
            chk.error(
                "consistency", name, f"attribute {key} = {attrs[key]!r}, manifest has {want!r}"
            )
    if "dt" in attrs and not math.isclose(float(attrs["dt"]), layout["dt"], rel_tol=0, abs_tol=0):
        chk.error("consistency", name, f"dt = {attrs['dt']!r}, manifest has {layout['dt']!r}")
    for key, want in (
        ("solver_config", m["solver_config"]),
        ("config", spec.get("config")),
        ("coarse_graining", spec.get("coarse_graining")),
    ):
        try:
            got = json.loads(attrs[key]) if key in attrs else None
        except (TypeError, ValueError):
            continue  # reported by the schema check
        if got != want and not (key == "solver_config" and got is None):
            chk.error("consistency", name, f"{key} = {got!r} differs from the manifest's {want!r}")
    for v in layout["variables"]:
        if v not in nc.variables:
            continue
        var = nc.variables[v]
        for a, want in (("units", layout["units"][v]), ("long_name", layout["long_names"][v])):
            if a in var.ncattrs() and var.getncattr(a) != want:
                chk.error(
                    "consistency",
                    f"{name}:{v}",
                    f"{a} = {var.getncattr(a)!r}, manifest has {want!r}",
                )
    # Coordinates are written from the same float64 formulas as grid_coords: exact match.
    want_coords = storage.grid_coords(layout["grid"])
    want_coords["time"] = np.arange(spec["num_frames"], dtype=np.float64) * layout["dt"]
    want_coords["trajectory"] = np.asarray(stored_ids(shard), dtype=np.int64)
    for c, want in want_coords.items():
        if c not in nc.variables:
            continue
        got = np.asarray(nc.variables[c][:])
        if got.shape != want.shape or not np.array_equal(got, want):
            chk.error(
                "consistency",
                f"{name}:{c}",
                f"coordinate values differ from the manifest's (got {got.shape} "
                f"[{_head(got)}], expected {want.shape} [{_head(want)}])",
            )
    if "time" in nc.variables and "units" in nc.variables["time"].ncattrs():
        got = nc.variables["time"].getncattr("units")
        if got != layout["time_units"]:
            chk.error(
                "consistency",
                f"{name}:time",
                f"units {got!r}, manifest has {layout['time_units']!r}",
            )


def _global_attrs(nc) -> dict[str, Any]:
    """Global attributes as plain Python values (numpy scalars unwrapped)."""
    out = {}
    for k in nc.ncattrs():
        v = nc.getncattr(k)
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def _head(a: np.ndarray) -> str:
    flat = np.ravel(a)
    return ", ".join(f"{x:.6g}" for x in flat[:3]) + (", ..." if flat.size > 3 else "")


# ---- data: completeness and accuracy ------------------------------------------------------
def _check_frames(
    chk: _Checker, m: Mapping, shard: Mapping, ids: np.ndarray, data: np.ndarray
) -> np.ndarray:
    """NaN/Inf, constant trajectories, repeated consecutive frames; ``data (n, T, C, ...)``.

    Returns the ``(n,)`` mask of the trajectories free of NaN/Inf.
    """
    variables = m["layout"]["variables"]
    dt = m["layout"]["dt"]
    n, t = data.shape[:2]
    flat = data.reshape(n, t, len(variables), -1)
    finite = np.isfinite(flat).all(axis=-1)  # (n, T, C)
    clean = finite.all(axis=(1, 2))
    for r in range(n):
        loc = f"trajectory {ids[r]} ({shard['file']})"
        bad = False
        for c, v in enumerate(variables):
            if not finite[r, :, c].all():
                f = int(np.argmin(finite[r, :, c]))
                chk.error("completeness", loc, f"{v}: NaN/Inf from frame {f} (t = {f * dt:.6g})")
                bad = True
        if bad:
            continue
        same = (flat[r, 1:] == flat[r, :-1]).all(axis=(1, 2))  # frame t+1 == frame t
        if same.all():
            chk.error("completeness", loc, "constant trajectory: all frames identical")
        elif same.any():
            f = np.flatnonzero(same)
            chk.error(
                "completeness",
                loc,
                f"{f.size} repeated consecutive frame(s): frame {f[0] + 1} equals frame {f[0]}",
            )
    return clean


class _Ranges:
    """Per-trajectory summaries for the plausible-range check (:data:`PLAUSIBLE_RANGE_FACTOR`).

    Only summaries are kept (mean, variance, extremes per variable), never the data.
    """

    def __init__(self, variables) -> None:
        self.variables = list(variables)
        self.rows: list[tuple[int, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, file: str, ids: np.ndarray, data: np.ndarray) -> None:
        """``data``: ``(n, T, C, *spatial)`` finite trajectories ``ids`` of shard ``file``."""
        for i, traj in zip(ids.tolist(), data, strict=True):
            x = np.moveaxis(traj, 1, 0).reshape(traj.shape[1], traj.shape[0], -1)  # (C, T, P)
            x = x.astype(np.float64)
            flat = x.reshape(x.shape[0], -1)
            lo, hi = flat.argmin(axis=1), flat.argmax(axis=1)
            self.rows.append(
                (
                    i,
                    file,
                    flat.mean(axis=1),
                    flat.var(axis=1),
                    np.stack([flat[np.arange(flat.shape[0]), lo], lo // x.shape[2]]),
                    np.stack([flat[np.arange(flat.shape[0]), hi], hi // x.shape[2]]),
                )
            )

    def check(self, chk: _Checker, train: range | None) -> None:
        if not self.rows:
            return
        ref = [r for r in self.rows if train is not None and r[0] in train] or self.rows
        means = np.stack([r[2] for r in ref])  # (N, C)
        variances = np.stack([r[3] for r in ref])
        center = np.median(means, axis=0)
        scale = np.median(np.sqrt(variances + (means - center) ** 2), axis=0)
        bound = PLAUSIBLE_RANGE_FACTOR * scale
        which = "training" if ref is not self.rows else "stored"
        for c, v in enumerate(self.variables):
            if not scale[c] > 0:
                chk.note("accuracy", f"plausible range of {v!r} not checked: constant field")
                continue
            chk.note(
                "accuracy",
                f"plausible range of {v!r}: {center[c]:.4g} +- {bound[c]:.4g} "
                f"({PLAUSIBLE_RANGE_FACTOR:g} robust std of the {which} trajectories)",
            )
        for i, file, _, _, lo, hi in self.rows:
            for c, v in enumerate(self.variables):
                if not scale[c] > 0:
                    continue
                (value, frame) = max(
                    ((lo[0, c], lo[1, c]), (hi[0, c], hi[1, c])),
                    key=lambda vf: abs(vf[0] - center[c]),
                )
                if abs(value - center[c]) > bound[c]:
                    chk.error(
                        "accuracy",
                        f"trajectory {i} ({file})",
                        f"{v} = {value:.4g} at frame {int(frame)} is implausible: "
                        f"{abs(value - center[c]) / scale[c]:.3g} robust standard deviations "
                        f"from the typical value {center[c]:.4g} (bound "
                        f"{PLAUSIBLE_RANGE_FACTOR:g} x {scale[c]:.4g}, from the {which} "
                        "trajectories)",
                    )


def _diagnostics_fn(chk: _Checker, solver, layout: Mapping, *, lift: bool = False):
    """A jitted ``(T, C, *spatial) -> {name: (T,)}`` of the conserved diagnostics, or None.

    With ``lift`` (a coarse-grained dataset) each stored frame is first resampled onto the
    solver's grid (its trigonometric interpolant): Fourier truncation keeps the mean mode,
    so domain means conserved by the solver stay conserved on the stored grid.
    """
    import jax

    from datasets.simulate import precision_scope
    from solvers.resolution import spectral_resample

    fine = tuple(solver.grid.num_points)

    def diagnostics(state):
        return solver.diagnostics(spectral_resample(state, fine) if lift else state)

    declared = getattr(type(solver), "conserved", None)
    try:
        with precision_scope(layout["precision"]):
            state = jax.ShapeDtypeStruct(tuple(layout["state_shape"]), layout["precision"])
            probe = jax.eval_shape(diagnostics, state)
    except Exception as e:  # noqa: BLE001 - a solver without diagnostics: report, go on
        chk.warn("accuracy", "solver", f"diagnostics unavailable: {type(e).__name__}: {e}")
        return None
    names = [k for k in (declared or CONSERVED_BY_CONVENTION) if k in probe]
    if not names:
        chk.note("accuracy", f"no conserved diagnostics among {sorted(probe)}; none checked")
        return None
    chk.note("accuracy", f"conserved diagnostics checked on every stored trajectory: {names}")
    return jax.jit(jax.vmap(lambda s: {k: diagnostics(s)[k] for k in names}))


def _check_conservation(chk, layout, spec, ids, data, diagnose) -> None:
    """Conserved diagnostics drift by at most round-off along each stored trajectory.

    Bound: ``10 eps (T + log2(points)) * scale`` with ``scale = max(|q|, max|u|)``: one
    rounding of the field per output step (transforms back and forth) accumulating at
    worst linearly over ``T`` frames, plus the pairwise-summation error of the mean, with
    a factor 10 of margin.
    """
    from datasets.simulate import precision_scope

    eps = float(np.finfo(np.dtype(layout["precision"])).eps)
    t = spec["num_frames"]
    points = int(np.prod(layout["grid"]["num_points"]))
    for r, trajectory in enumerate(data):
        with precision_scope(layout["precision"]):
            values = {k: np.asarray(v, np.float64) for k, v in diagnose(trajectory).items()}
        umax = float(np.abs(trajectory).max())
        for k, q in values.items():
            drift = float(np.abs(q - q[0]).max())
            bound = 10 * eps * (t + math.log2(points)) * max(float(np.abs(q).max()), umax)
            if not drift <= bound:
                chk.error(
                    "accuracy",
                    f"trajectory {ids[r]}",
                    f"conserved diagnostic {k!r} drifts by {drift:.3g} over the stored frames "
                    f"(round-off bound {bound:.3g})",
                )


def _check_resimulation(chk, m, solver, sample, found, tolerance) -> None:
    from datasets.provenance import library_versions
    from datasets.simulate import regenerate_trajectories

    dt = m["layout"]["dt"]
    todo = [i for i in sample if i in found]
    for i in sample:
        if i not in found:
            chk.error(
                "accuracy",
                f"trajectory {i}",
                "not compared: its shard is missing or unreadable (see consistency, schema)",
            )
    if not todo:
        return
    try:
        again = dict(zip(todo, regenerate_trajectories(m, todo, solver=solver), strict=True))
    except Exception as e:  # noqa: BLE001 - reported
        chk.error("accuracy", "solver", f"re-simulation failed: {type(e).__name__}: {e}")
        return
    for i in todo:
        stored = found[i]
        scale = float(np.abs(stored).max())
        err = np.abs(again[i].astype(np.float64) - stored).reshape(stored.shape[0], -1).max(axis=1)
        rel = err / scale if scale > 0 else err
        worst = float(rel.max())
        if not worst <= tolerance:
            f = int(np.argmax(~(rel <= tolerance)))
            libs = {
                k: (m.get("libraries", {}).get(k), v)
                for k, v in library_versions().items()
                if m.get("libraries", {}).get(k) != v
            }
            chk.error(
                "accuracy",
                f"trajectory {i}",
                f"re-simulation differs from the stored frames from frame {f} (t = {f * dt:.6g}): "
                f"max |difference| / max |u| = {worst:.3g} > tolerance {tolerance:.3g}"
                + (f"; libraries differ (stored, now): {libs}" if libs else ""),
            )
        else:
            exact = "bit-for-bit" if worst == 0 else f"within {worst:.3g}"
            chk.note(
                "accuracy", f"trajectory {i} re-simulated: {exact} (tolerance {tolerance:.3g})"
            )


# ---- completeness of the whole ------------------------------------------------------
def _check_coverage(chk: _Checker, m: Mapping[str, Any]) -> None:
    spec = m["spec"]
    n, tps = spec["num_trajectories"], spec["trajectories_per_shard"]
    written = {s["index"] for s in m["shards"]}
    missing = [k for k in range(math.ceil(n / tps)) if k not in written]
    if missing:
        chk.error(
            "completeness",
            MANIFEST_NAME,
            f"{len(missing)} shard(s) never written, e.g. {storage.shard_name(missing[0])} "
            f"(trajectories {missing[0] * tps}..{min(missing[0] * tps + tps, n) - 1}); "
            "rerun the generation to resume",
        )
    if not m.get("complete"):
        chk.error("completeness", MANIFEST_NAME, "the manifest marks the generation unfinished")
    skipped = m.get("skipped", [])
    if skipped:
        chk.warn(
            "completeness",
            MANIFEST_NAME,
            f"{len(skipped)} trajectorie(s) skipped for non-finite values during generation: "
            + ", ".join(f"{s['trajectory']} (t = {s['time']:.6g})" for s in skipped[:10]),
        )
    stored = stored_trajectories(m).size
    if stored == 0:
        chk.error(
            "completeness",
            MANIFEST_NAME,
            f"no trajectory stored (of {n}): the dataset is empty"
            + (" (all were skipped as non-finite)" if skipped else ""),
        )
    else:
        ids = stored_trajectories(m)
        for name, (lo, hi) in m["splits"].items():
            if hi > lo and not ((ids >= lo) & (ids < hi)).any():
                chk.error(
                    "completeness",
                    MANIFEST_NAME,
                    f"split {name!r} (trajectories {lo}..{hi - 1}) holds no stored trajectory",
                )
    chk.note(
        "completeness",
        f"{stored} of {n} trajectories stored, {spec['num_frames']} frames each",
    )


def _check_strays(chk: _Checker, m: Mapping[str, Any]) -> None:
    listed = {s["file"] for s in m["shards"]}
    for p in sorted(chk.directory.glob(f"{storage.SHARD_PREFIX}*{storage.SHARD_SUFFIX}")):
        if p.name not in listed:
            chk.warn("consistency", p.name, "shard-like file not listed in the manifest")
    stats = chk.directory / STATISTICS_NAME
    if stats.is_file():
        try:
            import netCDF4

            with netCDF4.Dataset(stats, "r") as nc:
                tag = nc.getncattr("dataset_fingerprint")
        except Exception as e:  # noqa: BLE001 - reported
            chk.error("consistency", STATISTICS_NAME, f"unreadable: {type(e).__name__}: {e}")
            return
        if tag != fingerprint(m):
            chk.error(
                "consistency",
                STATISTICS_NAME,
                "computed for different data (stale); run datasets.compute_statistics",
            )


# ---- command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m datasets.validate PATH``: print the report; exit 1 on failure."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m datasets.validate", description="Validate a generated dataset."
    )
    parser.add_argument("path", help="dataset directory (or its manifest.json)")
    parser.add_argument("--num-resimulate", type=int, default=2, help="trajectories to re-simulate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the re-simulated sample")
    parser.add_argument("--tolerance", type=float, default=None, help="re-simulation tolerance")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = validate(
        args.path, num_resimulate=args.num_resimulate, seed=args.seed, tolerance=args.tolerance
    )
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0 if report.passed else 1
