"""Solver benchmarks: our ETDRK4 solvers side by side with Exponax on identical problems.

Prints one JSON line per case (problem x batch x precision)::

    python benchmarks/solvers.py                      # all cases (several minutes)
    python benchmarks/solvers.py --quick              # float32, small cases, few repeats
    python benchmarks/solvers.py --cases ks,ns128 --precisions float64 --batches 32

Environment: Exponax (the ``bench`` extra) runs from the project venv ``.venv``:
``pip install --dry-run exponax`` showed it adds only exponax, equinox, jaxtyping and
wadler-lindig and leaves jax/jaxlib/flax/optax as they are, so no separate venv is needed.

Problems (Exponax configured to the same equation, grid, internal step ``h``, precision
and ETDRK order; its conventions, read from its source, version 0.2.0):

- ``ks``: Kuramoto-Sivashinsky ``u_t + u u_x + u_xx + u_xxxx = 0``, N = 256, L = 32 pi,
  h = 0.1. Exponax ``KuramotoSivashinskyConservative`` (``b1 = 1``: its convection is
  already ``-b1/2 (u^2)_x``; its ``KuramotoSivashinsky`` is the gradient-norm form).
- ``burgers``: ``u_t + u u_x = nu u_xx``, N = 256, L = 2 pi, nu = 0.02, h = 0.01. Exponax
  ``Burgers(diffusivity=nu, convection_scale=1, conservative=True)``: its default
  non-conservative form computes ``u u_x`` with one more inverse FFT per stage; with the
  2/3 rule both forms give the same dealiased tendency, ours is the conservative one.
- ``ns128`` / ``ns256``: Kolmogorov flow, nu = 1e-3, drag 0.1, A = 1, k_f = 4, L = 2 pi.
  Exponax ``KolmogorovFlowVorticity(diffusivity=nu, drag=-0.1, injection_mode=4,
  injection_scale=-1)``: its linear operator is ``nu lap + drag`` (so drag enters with a
  minus sign), its first array axis is x and its stream function solves ``lap psi = w``,
  so its vorticity is ``u_y - v_x``; its state is ``-w.T`` of ours (ours is ``(y, x)``,
  ``w = v_x - u_y``) and its injection ``-k_f s cos(k_f y)`` on that field is our
  forcing ``-A k_f cos(k_f y)`` for ``s = -A``. The issue's reference steps (0.01 at 128^2,
  0.005 at 256^2) exceed our start-up Courant limit (0.0085 and 0.0043), so h = 0.008 and
  0.004, the same for Exponax.
- Dealiasing: we keep ``|index| < n / 3`` per axis, Exponax keeps
  ``|index| <= fraction * (n // 2) - 1``, one mode fewer at the default 2/3; it is given
  the ``dealiasing_fraction`` that keeps exactly our modes (the cost is the same).

Before timing, for each (problem, precision), ours and Exponax (order 4) run the same
initial condition for a short horizon and the relative max difference is reported
(``check``); a case whose check fails is still timed, with ``check.ok = false``.

Each case runs in fresh subprocesses (float64 cases enable x64 only there): one times
both libraries in interleaved rounds (the machine is shared, so load drifts hit both
alike), and one per library compiles and runs its variants once for its peak RSS alone.

- ``ours.advance``: ``vmap`` of ``advance`` with ``num_substeps = steps`` (transforms only
  at the ends); ``ours.step_scan``: ``lax.scan`` of ``step`` (a forward and an inverse
  transform every step, as Exponax does); ``exponax.order4`` / ``exponax.order2``:
  ``lax.scan`` of its stepper (order 2 is its default).
- ``compile_s`` (lower + compile), ``first_call_s`` (compile + first run), ``run_s``
  (median of ``repeats`` timed runs after a warm-up, ``block_until_ready``),
  ``steps_per_s`` (internal steps of the whole batch per second), ``us_per_step``,
  ``point_steps_per_s`` (grid points x batch x steps per second), ``cores`` (process CPU
  time / wall time over the timed runs), ``xla_temp_mb`` (XLA's scratch for the call),
  and per library ``peak_rss_mb`` (``ru_maxrss`` of its own process) and
  ``import_rss_mb`` (the same after the imports, before any work).
- ``ratio = ours.advance.steps_per_s / exponax.order4.steps_per_s`` (target >= 1), from
  medians; ``ratio_best`` the same from the fastest runs;
  ``ratio_step_scan`` the same with ``ours.step_scan``; ``ratio_vs_order2`` against the
  Exponax default at the same h; ``ratio_vs_order2_equal_accuracy`` against the Exponax
  default run at the step ``h2`` where its error matches our order-4 error at h
  (``accuracy``, measured in float64 against a fine-step reference of ours, per problem,
  and applied to both precisions): simulated time per second, ours over theirs.

``load_avg`` is ``/proc/loadavg`` (1, 5, 15 min) at the start and end of each case: the
machine is shared, so read the figures with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# This file is named like the package it benchmarks: put the repository first on the path.
sys.path.insert(0, str(REPO))

PROBLEMS = {
    "ks": {"kind": "ks", "n": 256, "h": 0.1, "check_steps": 50, "accuracy_steps": 100},
    "burgers": {"kind": "burgers", "n": 256, "h": 0.01, "check_steps": 100, "accuracy_steps": 100},
    "ns128": {"kind": "ns", "n": 128, "h": 0.008, "check_steps": 50, "accuracy_steps": 25},
    "ns256": {"kind": "ns", "n": 256, "h": 0.004, "check_steps": 50, "accuracy_steps": 25},
}
KS_LENGTH = 32 * math.pi
BURGERS_VISCOSITY = 0.02
NS_VISCOSITY = 1e-3
NS_DRAG = 0.1
NS_FORCING_AMPLITUDE = 1.0
NS_FORCING_WAVENUMBER = 4

# Internal steps per timed call, (single, batched): each call lasts about 0.05-0.5 s.
STEPS = {
    "ks": (2000, 200),
    "burgers": (2000, 200),
    "ns128": (50, 4),
    "ns256": (20, 2),
}
# Relative max difference ours vs Exponax order 4 after check_steps steps. float64: the
# schemes are the same, only the ETDRK coefficients differ (Exponax: 16 contour points in
# working precision, ours 32 in float64), ~1e-12 per step. float32: round-off of both,
# amplified by the dynamics over the horizon (KS is chaotic).
CHECK_TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
# Error of the order-2 runs is measured at h / m for these m (stopping once it reaches
# ours), then interpolated (or extrapolated from the last two) in log-log.
ACCURACY_REFINEMENTS = {"ks": 256, "burgers": 256, "ns128": 8, "ns256": 4}
ACCURACY_REFERENCE_REFINEMENT = 8
BATCH = 32


def load_avg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- worker side (imports JAX) ---------------------------------------------------------
def _dealiasing_fraction(n: int) -> float:
    """Exponax fraction that keeps exactly the modes our 2/3 rule keeps."""
    import numpy as np

    from solvers import spectral

    kept = int(np.flatnonzero(spectral.dealiasing_mask((n,)))[-1])
    # Exponax keeps |index| <= fraction * (n // 2) - 1; aim half-way between kept + 0, + 1.
    return (kept + 1.5) / (n // 2)


def build_ours(name: str, h: float, substeps: int, precision: str):
    import solvers

    p = PROBLEMS[name]
    common = {"dt": h * substeps, "num_substeps": substeps, "precision": precision}
    if p["kind"] == "ks":
        return solvers.KuramotoSivashinsky(num_points=p["n"], domain_length=KS_LENGTH, **common)
    if p["kind"] == "burgers":
        return solvers.Burgers(num_points=p["n"], viscosity=BURGERS_VISCOSITY, **common)
    return solvers.NavierStokes2D(
        num_points=p["n"],
        viscosity=NS_VISCOSITY,
        drag=NS_DRAG,
        forcing_amplitude=NS_FORCING_AMPLITUDE,
        forcing_wavenumber=NS_FORCING_WAVENUMBER,
        **common,
    )


def build_exponax(name: str, h: float, order: int):
    import exponax

    p = PROBLEMS[name]
    n = p["n"]
    frac = _dealiasing_fraction(n)
    if p["kind"] == "ks":
        return exponax.stepper.KuramotoSivashinskyConservative(
            1, KS_LENGTH, n, h, convection_scale=1.0, order=order, dealiasing_fraction=frac
        )
    if p["kind"] == "burgers":
        return exponax.stepper.Burgers(
            1,
            2 * math.pi,
            n,
            h,
            diffusivity=BURGERS_VISCOSITY,
            convection_scale=1.0,
            conservative=True,
            order=order,
            dealiasing_fraction=frac,
        )
    return exponax.stepper.KolmogorovFlowVorticity(
        2,
        2 * math.pi,
        n,
        h,
        diffusivity=NS_VISCOSITY,
        drag=-NS_DRAG,
        injection_mode=NS_FORCING_WAVENUMBER,
        injection_scale=-NS_FORCING_AMPLITUDE,
        order=order,
        dealiasing_fraction=frac,
    )


def to_exponax(name: str, state):
    """Our state ``(..., C, *spatial)`` -> Exponax's layout and sign for the same flow."""
    import jax.numpy as jnp

    if PROBLEMS[name]["kind"] == "ns":
        return -jnp.swapaxes(state, -1, -2)
    return state


def initial_states(name: str, precision: str, batch: int):
    """``(batch, C, *spatial)`` initial conditions from our solver (seeded)."""
    import jax

    solver = build_ours(name, PROBLEMS[name]["h"], 1, precision)
    keys = jax.random.split(jax.random.key(0), batch)
    return jax.vmap(solver.initial_condition)(keys)


def scan_steps(stepper, steps: int):
    import jax

    def run(u):
        return jax.lax.scan(lambda v, _: (stepper(v), None), u, None, length=steps)[0]

    return run


def _compile(fn, x) -> tuple:
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(x).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(x))
    return compiled, compile_s, time.perf_counter() - t0


def _variants(name: str, lib: str, u0, batch: int, steps: int, precision: str) -> dict:
    """``{label: (fn, input)}`` for one library; ``fn`` maps a batch to a batch."""
    import jax

    h = PROBLEMS[name]["h"]
    if lib == "ours":
        x = u0
        fns = {
            "advance": build_ours(name, h, steps, precision).advance,
            "step_scan": scan_steps(build_ours(name, h, 1, precision).step, steps),
        }
    else:
        x = to_exponax(name, u0)
        fns = {
            f"order{order}": scan_steps(build_exponax(name, h, order), steps) for order in (4, 2)
        }
    out = {}
    for label, fn in fns.items():
        f = jax.vmap(fn) if batch > 1 else (lambda u, fn=fn: fn(u[0])[None])
        out[label] = (f, x)
    return out


def worker_time(spec: dict) -> dict:
    """Both libraries on one case, timed in interleaved rounds (the machine is shared)."""
    import jax

    name, batch, precision = spec["name"], spec["batch"], spec["precision"]
    steps, repeats = spec["steps"], spec["repeats"]
    p = PROBLEMS[name]
    points = p["n"] ** (2 if p["kind"] == "ns" else 1) * batch
    out = {}
    if spec.get("check"):
        out.update(check_and_accuracy(name, precision, spec.get("accuracy", False)))
    u0 = initial_states(name, precision, batch)
    runs = {}
    for lib in ("ours", "exponax"):
        for label, (f, x) in _variants(name, lib, u0, batch, steps, precision).items():
            compiled, compile_s, first_s = _compile(f, x)
            jax.block_until_ready(compiled(x))  # warm-up
            runs[(lib, label)] = {
                "call": (compiled, x),
                "compile_s": compile_s,
                "first_call_s": first_s,
                "times": [],
                "cpu": 0.0,
                "temp": compiled.memory_analysis(),
            }
    for _ in range(repeats):
        for r in runs.values():
            compiled, x = r["call"]
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(compiled(x))
            r["times"].append(time.perf_counter() - t0)
            r["cpu"] += time.process_time() - c0
    for (lib, label), r in runs.items():
        run_s = statistics.median(r["times"])
        sps = steps / run_s
        temp = getattr(r["temp"], "temp_size_in_bytes", None)
        out.setdefault(lib, {})[label] = {
            "compile_s": round(r["compile_s"], 3),
            "first_call_s": round(r["first_call_s"], 3),
            "run_s": round(run_s, 5),
            "run_s_min": round(min(r["times"]), 5),
            "steps_per_s": round(sps, 1),
            "steps_per_s_best": round(steps / min(r["times"]), 1),
            "us_per_step": round(1e6 / sps, 2),
            "point_steps_per_s": float(f"{sps * points:.4g}"),
            "cores": round(r["cpu"] / sum(r["times"]), 2),
            "xla_temp_mb": None if temp is None else round(temp / 2**20, 3),
        }
        print(
            f"  {name} b{batch} {precision} {lib}.{label}: {1e6 / sps:.1f} us/step", file=sys.stderr
        )
    return out


def worker_memory(spec: dict) -> dict:
    """Peak RSS of one library alone on one case: compile and run each of its variants once."""
    import jax

    name, lib, batch, precision = spec["name"], spec["lib"], spec["batch"], spec["precision"]
    u0 = initial_states(name, precision, batch)
    for f, x in _variants(name, lib, u0, batch, spec["steps"], precision).values():
        jax.block_until_ready(jax.jit(f)(x))
    return {"peak_rss_mb": round(rss_mb(), 1)}


def _relative_max_diff(a, b) -> float:
    import jax.numpy as jnp

    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def _relative_l2(a, b) -> float:
    import jax.numpy as jnp

    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def check_and_accuracy(name: str, precision: str, accuracy: bool) -> dict:
    """Ours vs Exponax order 4 on one trajectory; optionally the float64 accuracy study."""
    import jax
    import numpy as np

    p = PROBLEMS[name]
    h = p["h"]
    u0 = initial_states(name, precision, 1)[0]
    k = p["check_steps"]
    ours = jax.jit(build_ours(name, h, k, precision).advance)(u0)
    theirs = jax.jit(scan_steps(build_exponax(name, h, 4), k))(to_exponax(name, u0))
    diff = _relative_max_diff(to_exponax(name, ours), theirs)
    tol = CHECK_TOLERANCE[precision]
    out = {
        "check": {
            "steps": k,
            "t": round(k * h, 6),
            "rel_max_diff": float(f"{diff:.3g}"),
            "tol": tol,
            "ok": bool(np.isfinite(diff) and diff <= tol),
            "dtype": str(ours.dtype),
            "exponax_dtype": str(theirs.dtype),
        }
    }
    if accuracy and precision == "float64":
        out["accuracy"] = _accuracy(name, u0)
    return out


def _accuracy(name: str, u0) -> dict:
    """Error at t = accuracy_steps * h of ours (order 4), Exponax order 4 and order 2."""
    import jax

    p = PROBLEMS[name]
    h, k = p["h"], p["accuracy_steps"]
    r = ACCURACY_REFERENCE_REFINEMENT
    reference = jax.jit(build_ours(name, h / r, k * r, "float64").advance)(u0)
    ref_ex = to_exponax(name, reference)
    ours_err = _relative_l2(jax.jit(build_ours(name, h, k, "float64").advance)(u0), reference)
    x0 = to_exponax(name, u0)
    o4_err = _relative_l2(jax.jit(scan_steps(build_exponax(name, h, 4), k))(x0), ref_ex)
    o2 = []
    m = 1
    while m <= ACCURACY_REFINEMENTS[name]:
        run = jax.jit(scan_steps(build_exponax(name, h / m, 2), k * m))
        o2.append((m, _relative_l2(run(x0), ref_ex)))
        if o2[-1][1] <= ours_err:
            break
        m *= 2
    if len(o2) == 1:
        factor, how = 1.0, "order 2 already as accurate at h"
    else:
        (m1, e1), (m2, e2) = o2[-2], o2[-1]
        slope = math.log(e1 / e2) / math.log(m2 / m1)
        factor = m1 * (e1 / ours_err) ** (1 / slope)
        how = "interpolated" if e2 <= ours_err else "extrapolated"
    return {
        "t": round(k * h, 6),
        "reference": f"ours with h/{r}",
        "ours_rel_l2": float(f"{ours_err:.3g}"),
        "exponax_order4_rel_l2": float(f"{o4_err:.3g}"),
        "exponax_order2_rel_l2": {f"h/{m}": float(f"{e:.3g}") for m, e in o2},
        "order2_steps_per_our_step": round(factor, 2),
        "order2_equal_accuracy_dt": float(f"{h / factor:.4g}"),
        "how": how,
    }


def worker(spec: dict) -> None:
    if spec["precision"] == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    import exponax  # noqa: F401  (import cost and memory in both libraries' processes)

    import solvers  # noqa: F401

    import_rss = rss_mb()
    result = worker_memory(spec) if "lib" in spec else worker_time(spec)
    result["import_rss_mb"] = round(import_rss, 1)
    print(json.dumps(result))


# ---- driver side (no JAX) ------------------------------------------------------------
def run_worker(spec: dict) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else proc.stderr)
    if proc.returncode:
        return {"error": f"worker exited {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="float32 only, ks/burgers/ns128, 3 repeats"
    )
    parser.add_argument("--cases", default=None, help=f"comma list of {','.join(PROBLEMS)}")
    parser.add_argument("--precisions", default=None, help="comma list of float32,float64")
    parser.add_argument("--batches", default=None, help=f"comma list of 1,{BATCH}")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(json.loads(args.worker))
        return

    default_names = ["ks", "burgers", "ns128"] if args.quick else list(PROBLEMS)
    names = args.cases.split(",") if args.cases else default_names
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        parser.error(f"--cases: unknown {unknown}, choose from {list(PROBLEMS)}")
    default_precisions = ["float32"] if args.quick else ["float32", "float64"]
    precisions = args.precisions.split(",") if args.precisions else default_precisions
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [1, BATCH]
    repeats = args.repeats or (3 if args.quick else 5)

    checks = {}
    for name in names:
        # The float64 accuracy study runs once per problem; its result joins every line.
        accuracy = None
        for batch in sorted(batches):
            steps = STEPS[name][0 if batch == 1 else 1]
            for precision in sorted(precisions, reverse=True):
                load_start = load_avg()
                spec = {
                    "name": name,
                    "batch": batch,
                    "precision": precision,
                    "steps": steps,
                    "repeats": repeats,
                }
                first = batch == min(batches)
                timing = run_worker(
                    {**spec, "check": first, "accuracy": first and precision == "float64"}
                )
                if first:
                    checks[(name, precision)] = timing.pop("check", None)
                accuracy = timing.pop("accuracy", accuracy)
                memory = {lib: run_worker({**spec, "lib": lib}) for lib in ("ours", "exponax")}
                ours, theirs = timing.get("ours", {}), timing.get("exponax", {})
                line = {
                    "case": f"{name}_b{batch}_{precision}",
                    "problem": name,
                    "num_points": PROBLEMS[name]["n"],
                    "batch": batch,
                    "precision": precision,
                    "h": PROBLEMS[name]["h"],
                    "steps_per_call": steps,
                    "repeats": repeats,
                    "check": checks.get((name, precision)),
                }
                try:
                    ours_sps = ours["advance"]["steps_per_s"]
                    o4, o2 = theirs["order4"]["steps_per_s"], theirs["order2"]["steps_per_s"]
                    line["ratio"] = round(ours_sps / o4, 3)
                    line["ratio_best"] = round(
                        ours["advance"]["steps_per_s_best"] / theirs["order4"]["steps_per_s_best"],
                        3,
                    )
                    line["ratio_step_scan"] = round(ours["step_scan"]["steps_per_s"] / o4, 3)
                    line["ratio_vs_order2"] = round(ours_sps / o2, 3)
                    if accuracy is not None:
                        factor = accuracy["order2_steps_per_our_step"]
                        line["ratio_vs_order2_equal_accuracy"] = round(factor * ours_sps / o2, 3)
                except (KeyError, TypeError):
                    line["ratio"] = None
                    line["error"] = timing.get("error")
                line["accuracy"] = accuracy
                for lib, result in (("ours", ours), ("exponax", theirs)):
                    result["peak_rss_mb"] = memory[lib].get("peak_rss_mb")
                    result["import_rss_mb"] = memory[lib].get("import_rss_mb")
                line["ours"], line["exponax"] = ours, theirs
                line["load_avg"] = {"start": load_start, "end": load_avg()}
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    main()
