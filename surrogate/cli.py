"""Hydra entry points: the whole pipeline and each stage on its own.

    hs-pipeline [overrides]      generate -> validate -> train -> evaluate -> hybrid -> report
    hs-generate / hs-validate / hs-train / hs-evaluate / hs-hybrid / hs-report [overrides]
    python -m surrogate [overrides]          same as hs-pipeline

Every config node is checked against what it configures before any work starts: an
unknown key (with a "did you mean" hint) or a wrong type fails with a message naming the
node and the key. This is the only module (with ``datasets.cli``) that imports Hydra.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("surrogate")

STAGES = ("generate", "validate", "train", "evaluate", "hybrid", "report")
_MODEL_RUNTIME = ("in_channels", "out_channels", "spatial_dims", "rngs", "dtype", "param_dtype")
_DATA_NON_GENERATE = ("path",)


def require_project_datasets() -> None:
    """Fail loudly if ``import datasets`` resolves to another package than ours.

    Raises:
        ImportError: naming the file that was imported and what to do.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - our package is part of the install
        raise ImportError(
            "cannot import this project's `datasets` package; reinstall with "
            "`pip install -e .` in a fresh virtual environment"
        ) from e
    if not getattr(datasets, "__hybrid_surrogates__", False):
        where = getattr(datasets, "__file__", "?")
        raise ImportError(
            f"`import datasets` loaded {where}, which is not this project's data package "
            "(probably the unrelated `datasets` package from PyPI). Install "
            "hybrid-surrogates into its own virtual environment (`make setup` creates .venv) "
            "or uninstall the other package."
        )


# ---- config -> objects ----------------------------------------------------------------
def _plain(node) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _target_of(node, where: str):
    from hydra.utils import get_object

    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        raise ValueError(f"{where}: config node has no _target_")
    try:
        return get_object(target)
    except Exception as e:
        raise ValueError(f"{where}: _target_ {target!r} cannot be imported: {e}") from None


def check_config(cfg) -> None:
    """Check every node against its target's signature (see module docstring)."""
    import datasets
    from solvers.config_schema import check_kwargs
    from surrogate.train import TrainConfig

    check_kwargs(_target_of(cfg.solver, "solver"), _plain(cfg.solver), where="solver")
    check_kwargs(
        _target_of(cfg.model, "model"), _plain(cfg.model), where="model", runtime=_MODEL_RUNTIME
    )
    check_kwargs(TrainConfig, _plain(cfg.train), where="train")
    data = {k: v for k, v in _plain(cfg.data).items() if k not in _DATA_NON_GENERATE}
    check_kwargs(datasets.generate, data, where="data", runtime=("solver", "out_dir", "config"))
    if "runner" in cfg.hybrid:
        from surrogate.hybrid import HybridRunner

        runner = {
            k: v for k, v in _plain(cfg.hybrid.runner).items() if k not in ("policy", "indicators")
        }
        check_kwargs(HybridRunner, runner, where="hybrid.runner", runtime=("solver", "surrogate"))
        policy = cfg.hybrid.runner.get("policy")
        if policy is not None:
            check_kwargs(
                _target_of(policy, "hybrid.runner.policy"),
                _plain(policy),
                where="hybrid.runner.policy",
            )
        for i, ind in enumerate(cfg.hybrid.runner.get("indicators") or []):
            check_kwargs(
                _target_of(ind, f"hybrid.runner.indicators[{i}]"),
                _plain(ind),
                where=f"hybrid.runner.indicators[{i}]",
            )


def build_solver(cfg):
    from hydra.utils import instantiate

    return instantiate(cfg.solver, _convert_="all")


def model_name_of(cfg) -> tuple[str, dict[str, Any]]:
    """Registry name and kwargs of the model node (``_target_`` mapped to its name)."""
    from surrogate.models import MODELS

    target = _target_of(cfg.model, "model")
    for name, cls in MODELS.items():
        if cls is target:
            kwargs = {k: v for k, v in _plain(cfg.model).items() if not k.startswith("_")}
            return name, kwargs
    raise ValueError(
        f"model: _target_ {cfg.model._target_!r} is not a registered model ({', '.join(MODELS)})"
    )


def _enable_precision(cfg) -> None:
    import jax

    if cfg.solver.get("precision", "float32") == "float64":
        jax.config.update("jax_enable_x64", True)


def _run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _data_parallel(value) -> bool:
    """``data_parallel``: ``true``, ``false`` or ``auto`` (more than one device in the job)."""
    import jax

    if value == "auto":
        return jax.device_count() > 1
    if isinstance(value, bool):
        return value
    raise ValueError(f"data_parallel must be true, false or auto, got {value!r}")


def _check_divisible_batches(cfg, stages, n: int) -> None:
    """Fail at start-up, naming the keys, when a batch cannot be split over ``n`` devices."""
    keys = {"train": "batch_size", "hybrid": "num_trajectories"}
    bad = [
        f"{stage}.{key}={cfg[stage][key]}"
        for stage, key in keys.items()
        if stage in stages and int(cfg[stage][key]) % n
    ]
    if bad:
        raise ValueError(
            f"data_parallel splits batches over the {n} devices of this job: "
            f"{', '.join(bad)} must be multiples of {n} (or set data_parallel=false)"
        )


# ---- the stages ----------------------------------------------------------------------
def run_stages(cfg, stages) -> Path:
    """Run ``stages`` (a subset of :data:`STAGES`, in order) for config ``cfg``."""
    from omegaconf import OmegaConf

    from surrogate import pipeline

    require_project_datasets()
    # orbax reports every save at INFO through absl; keep the console for our own progress.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    _enable_precision(cfg)
    check_config(cfg)
    from hydra.utils import instantiate

    from surrogate.distributed import barrier, data_mesh, is_primary

    instantiate(cfg.distributed)  # jax.distributed.initialize when configured
    if not is_primary():  # Hydra's log file in the run directory belongs to process 0
        root = logging.getLogger()
        for h in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(h)
            h.close()
    mesh = data_mesh() if _data_parallel(cfg.get("data_parallel", "auto")) else None
    if mesh is not None:
        _check_divisible_batches(cfg, stages, mesh.size)
    run_dir = _run_dir()
    pipeline.write_run_metadata(run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    data_dir = Path(cfg.data.path)
    solver = build_solver(cfg)
    timings: dict[str, float] = {}
    forecaster = None
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        log.info("stage %s", stage)
        if stage == "generate":
            data = {k: v for k, v in _plain(cfg.data).items() if k not in _DATA_NON_GENERATE}
            progress = data.pop("progress", True)
            pipeline.stage_generate(
                solver,
                data_dir,
                data,
                config={"solver": _plain(cfg.solver), "data": _plain(cfg.data)},
                progress=progress,
            )
        elif stage == "validate":
            pipeline.stage_validate(
                data_dir, run_dir, num_resimulate=cfg.get("validate_resimulate", 2)
            )
        elif stage == "train":
            name, kwargs = model_name_of(cfg)
            forecaster = pipeline.stage_train(
                data_dir,
                run_dir,
                model_name=name,
                model_kwargs=kwargs,
                train_config=instantiate(cfg.train, _convert_="all"),
                progress=bool(cfg.get("progress", True)) and is_primary(),
                mesh=mesh,
            )
        elif stage in ("evaluate", "hybrid"):
            if forecaster is None:
                forecaster = pipeline.load_trained(run_dir, data_dir)
            if stage == "evaluate":
                ev = cfg.get("evaluate", {})
                pipeline.stage_evaluate(
                    forecaster, solver, data_dir, run_dir, mesh=mesh, **_plain(ev) if ev else {}
                )
            else:
                runner = instantiate(
                    cfg.hybrid.runner, solver=solver, surrogate=forecaster, mesh=mesh
                )
                sweep = cfg.hybrid.get("sweep") or {}
                pipeline.stage_hybrid(
                    runner,
                    data_dir,
                    run_dir,
                    num_steps=int(cfg.hybrid.num_steps),
                    num_trajectories=int(cfg.hybrid.num_trajectories),
                    sweep_indicator=sweep.get("indicator"),
                    sweep_thresholds=list(sweep.get("thresholds") or []),
                    scenarios=_plain(cfg.hybrid.scenarios) if cfg.hybrid.get("scenarios") else None,
                    short_lead_steps=int(cfg.hybrid.get("short_lead_steps", 5)),
                )
        elif stage == "report" and is_primary():
            path = pipeline.stage_report(run_dir, data_dir, timings=timings)
            print(f"report: {path}")
        barrier(f"hs-pipeline:{stage}")  # no process reads a stage's files before they exist
        timings[stage] = time.perf_counter() - t0
        log.info("stage %s done in %.1f s", stage, timings[stage])
    return run_dir


def _hydra_main(stages_fn):
    """Wrap a function of the config in ``hydra.main`` with our config tree."""
    import hydra

    config_path = str(Path(__file__).resolve().parents[1] / "configs")

    @hydra.main(version_base=None, config_path=config_path, config_name="config")
    def main(cfg) -> None:
        try:
            run_stages(cfg, stages_fn(cfg))
        except Exception as e:  # one clear line, the traceback only with HYDRA_FULL_ERROR
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)

    return main


def pipeline() -> None:
    """Console script ``hs-pipeline``: all stages, or ``stages=[...]`` from the config."""
    _hydra_main(lambda cfg: list(cfg.get("stages", STAGES)))()


def _single(stage: str):
    def run() -> None:
        _hydra_main(lambda cfg: [stage])()

    run.__name__ = stage
    run.__doc__ = f"Console script ``hs-{stage}``: the {stage} stage alone."
    return run


generate = _single("generate")
validate = _single("validate")
train = _single("train")
evaluate = _single("evaluate")
hybrid = _single("hybrid")
report = _single("report")
