"""Solve two PDEs with the classical solvers and plot them.

Kuramoto-Sivashinsky (1D, chaotic) as a space-time diagram and 2D Kolmogorov flow
(Navier-Stokes, vorticity form) as snapshots. Runs in well under a minute on a CPU.

    python examples/01_solve_and_plot.py [--out outputs/examples] [--tiny]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from solvers import KuramotoSivashinsky, NavierStokes2D, check_finite, rollout  # noqa: E402


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/examples", help="output folder")
    ap.add_argument("--tiny", action="store_true", help="smallest setting (for tests)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- Kuramoto-Sivashinsky: u_t + u u_x + u_xx + u_xxxx = 0 on [0, 32 pi) ---
    ks = KuramotoSivashinsky(num_points=64 if args.tiny else 256, dt=1.0, num_substeps=4)
    u0 = ks.initial_condition(jax.random.key(0))
    t0 = time.perf_counter()
    traj = rollout(ks, u0, 50 if args.tiny else 300)
    traj.block_until_ready()
    print(f"KS: {traj.shape[0] - 1} steps of dt={ks.dt} in {time.perf_counter() - t0:.2f} s")
    check_finite(traj, dt=ks.dt)

    # --- Kolmogorov flow: w_t + u.grad w = nu lap w - alpha w + forcing ---
    ns = NavierStokes2D(num_points=32 if args.tiny else 64)
    w0 = ns.initial_condition(jax.random.key(1))
    t0 = time.perf_counter()
    ns_traj = rollout(ns, w0, 10 if args.tiny else 100)
    ns_traj.block_until_ready()
    print(
        f"Navier-Stokes: {ns_traj.shape[0] - 1} steps of dt={ns.dt} in {time.perf_counter() - t0:.2f} s"
    )
    check_finite(ns_traj, dt=ns.dt)

    fig, axes = plt.subplots(1, 4, figsize=(16, 4), gridspec_kw={"width_ratios": [1.6, 1, 1, 1]})
    x = ks.grid.coords()["x"]
    t = np.arange(traj.shape[0]) * ks.dt
    im = axes[0].pcolormesh(x, t, np.asarray(traj[:, 0]), cmap="RdBu_r", shading="auto")
    axes[0].set(xlabel="x [1]", ylabel="t [1]", title="Kuramoto-Sivashinsky u(x, t)")
    fig.colorbar(im, ax=axes[0], label="u [1]")
    y, xx = ns.grid.coords()["y"], ns.grid.coords()["x"]
    frames = [0, ns_traj.shape[0] // 2, ns_traj.shape[0] - 1]
    vmax = float(np.abs(np.asarray(ns_traj[frames[-1], 0])).max())
    for ax, f in zip(axes[1:], frames, strict=True):
        im = ax.pcolormesh(
            xx, y, np.asarray(ns_traj[f, 0]), cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="auto"
        )
        ax.set(
            xlabel="x [1]", ylabel="y [1]", title=f"vorticity, t = {f * ns.dt:.1f}", aspect="equal"
        )
    fig.colorbar(im, ax=axes[1:], label="vorticity [1]")
    path = out / "01_solve_and_plot.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
