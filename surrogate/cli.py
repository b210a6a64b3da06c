"""Hydra entry points: the whole pipeline and each stage on its own.

    hs-pipeline [overrides]      generate -> validate -> train -> evaluate -> hybrid -> front -> report
    hs-generate / hs-validate / hs-train / hs-evaluate / hs-hybrid / hs-report [overrides]
    python -m surrogate [overrides]          same as hs-pipeline

Every config node is checked against what it configures before any work starts: an
unknown key (with a "did you mean" hint) or a wrong type fails with a message naming the
node and the key. Every ``_target_`` anywhere in the config (Hydra's own ``hydra`` node
aside) must name a class or function of this project or of a module trusted with
:func:`solvers.trust_module`; anything else is refused before anything is imported or
built. The run name must be one path component (the run directory is ``runs/<name>``).
This is the only module (with ``datasets.cli``) that imports Hydra.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path, PureWindowsPath
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("surrogate")

STAGES = ("generate", "validate", "train", "evaluate", "hybrid", "front", "report")
_MODEL_RUNTIME = ("in_channels", "out_channels", "spatial_dims", "rngs", "dtype", "param_dtype")
_DATA_NON_GENERATE = ("path",)
_EVALUATE_RUNTIME = ("forecaster", "solver", "data_dir", "run_dir", "mesh")
_NODES = ("solver", "data", "model", "train", "hybrid", "distributed", "evaluate", "front")
_FRONT_RUNTIME = ("stepper", "data_dir", "run_dir", "name", "seed", "progress")


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


def _plain_value(value) -> Any:
    """A config value as plain Python (containers converted, interpolations resolved)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """The keys of the top level of ``configs/config.yaml`` (its nodes are checked alone).

    Attributes:
        seed: base random seed (``train.seed`` follows it).
        data_parallel: ``true``, ``false`` or ``auto`` (split batches over the devices).
        stages: stages ``hs-pipeline`` runs, a subset of :data:`STAGES`.
        progress: progress bars on long work.
        name: run name; the run directory is ``runs/<name>``, so one path component.
        data_root: directory of the datasets.
        validate_resimulate: trajectories re-simulated by the validate stage (>= 0).
        stepper: the learned stepper the train stage builds: ``forecaster`` (the network
            alone) or ``correction`` (the dataset's solver on the dataset's grid plus a
            network correction, trained through the solver).
        front: :func:`surrogate.front_stage.stage_front` keywords (the ``front`` stage).
        resume: training resumes its checkpoints (``true``), refuses to (``false``), or
            resumes although settings changed (``force``, recorded in the run).
        on_change: what a rerun does when a finished stage of its run directory was made
            with other settings: ``refuse`` (naming the changed keys) or ``redo`` (that
            stage and the ones downstream; :mod:`surrogate.stage_records`).
    """

    solver: dict
    data: dict
    model: dict
    train: dict
    hybrid: dict
    distributed: dict
    evaluate: dict | None = None
    hydra: dict | None = None
    seed: int = 0
    data_parallel: bool | str = "auto"
    stages: tuple[str, ...] = STAGES
    progress: bool = True
    name: str = "run"
    data_root: str = "data"
    validate_resimulate: int = 2
    stepper: str = "forecaster"
    front: dict | None = None
    resume: bool | str = True
    on_change: str = "refuse"


@dataclasses.dataclass(frozen=True)
class HybridKeys:
    """The ``hybrid`` node: the runner and the run settings of :func:`pipeline.stage_hybrid`.

    Attributes:
        runner: :class:`surrogate.hybrid.HybridRunner` node (policy, indicators).
        num_steps: horizon in steps of ``dt`` (>= 1).
        num_trajectories: test initial states (>= 1).
        sweep: :class:`SweepKeys`, a threshold sweep of one indicator.
        scenarios: out-of-distribution runs, name -> amplitude factor.
        short_lead_steps: lead (steps) of the short-range accuracy (>= 1).
    """

    runner: dict
    num_steps: int = 500
    num_trajectories: int = 8
    sweep: dict | None = None
    scenarios: dict[str, float] | None = None
    short_lead_steps: int = 5


@dataclasses.dataclass(frozen=True)
class SweepKeys:
    """The ``hybrid.sweep`` node: rerun the hybrid run with each threshold of one indicator.

    Attributes:
        indicator: name of an indicator checked by the policy (``None``: no sweep).
        thresholds: the thresholds, in the indicator's units.
    """

    indicator: str | None = None
    thresholds: tuple[float, ...] = ()


def check_run_name(name: Any) -> str:
    """The run name, refused unless it is one path component (``runs/<name>``).

    Raises:
        ConfigError: naming the ``name`` key.
    """
    from solvers.config_schema import ConfigError

    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or PureWindowsPath(name).drive
    ):
        raise ConfigError(
            f"name: {name!r} is not a run name: the run directory is runs/<name>, so the "
            "name must be one path component (not empty, no '/', '\\' or '..'), e.g. "
            "name=ks-fno-long"
        )
    return name


def check_targets(cfg) -> dict[str, Any]:
    """Every ``_target_`` of a config (but Hydra's ``hydra`` node), checked, by key path.

    Call it before instantiating any node of a config that may come from someone else
    (a composed config, a run directory's stored ``config.yaml``).

    Returns:
        The class or function each ``_target_`` names, by key path (``"solver"``,
        ``"hybrid.runner.indicators[0]"``, ...).

    Raises:
        solvers.UntrustedCodeError: naming the key path and the target; nothing outside
            the trusted code (:func:`solvers.resolve_trusted`) was imported.
    """
    from solvers.registry import resolve_trusted

    found: dict[str, Any] = {}

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                where = f"{path}.{key}" if path else str(key)
                if key == "_target_":
                    found[path] = resolve_trusted(sub, where=where)
                else:
                    walk(sub, where)
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")

    # Hydra's own nodes (launchers, callbacks, sweepers) are Hydra's business.
    walk({k: _plain_value(cfg[k]) for k in cfg if k != "hydra"}, "")
    return found


def check_config(cfg, stages=None) -> dict[str, Any]:
    """Check the whole config before any work: keys, types, values and every ``_target_``.

    Every ``_target_`` (any node but ``hydra``) is checked first, before anything is
    imported for it; then each node against the signature it configures, the top-level,
    ``hybrid``, ``hybrid.sweep`` and ``evaluate`` keys against their schemas
    (:class:`RunKeys`, :class:`HybridKeys`, :class:`SweepKeys`,
    :func:`surrogate.pipeline.stage_evaluate`), counts against their ranges, the run name,
    and what the chosen ``stages`` need.

    Args:
        cfg: the composed config (with or without the ``hydra`` node).
        stages: the stages that will run (some checks concern only some stages);
            default: the config's ``stages``.

    Returns:
        The class or function each ``_target_`` names, by key path (``"solver"``,
        ``"hybrid.runner.indicators[0]"``, ...).

    Raises:
        solvers.UntrustedCodeError: a ``_target_`` outside the trusted code.
        solvers.config_schema.ConfigError: naming the key (with "did you mean").
    """
    import datasets
    from solvers.config_schema import ConfigError, check_kwargs
    from surrogate.train import TrainConfig

    targets = check_targets(cfg)  # before anything else imports or builds a target
    if stages is None:
        stages = list(_plain_value(cfg.get("stages", STAGES)))

    def target(path: str):
        if path not in targets:
            raise ConfigError(f"{path}: config node has no _target_")
        return targets[path]

    _check_top_level(cfg)
    check_kwargs(target("solver"), _plain(cfg.solver), where="solver")
    check_kwargs(target("model"), _plain(cfg.model), where="model", runtime=_MODEL_RUNTIME)
    model_name_of(cfg, targets["model"])
    train = target("train")
    if not (isinstance(train, type) and issubclass(train, TrainConfig)):
        raise ConfigError(
            f"train._target_ = {cfg.train._target_!r} must be surrogate.train.TrainConfig"
        )
    check_kwargs(train, _plain(cfg.train), where="train")
    check_kwargs(target("distributed"), _plain(cfg.distributed), where="distributed")
    data = {k: v for k, v in _plain(cfg.data).items() if k not in _DATA_NON_GENERATE}
    check_kwargs(datasets.generate, data, where="data", runtime=("solver", "out_dir", "config"))
    _check_evaluate(_plain(cfg.evaluate) if cfg.get("evaluate") is not None else {})
    _check_front(cfg, stages)
    _check_hybrid(cfg, target)
    history = cfg.train.get("history", 1)
    later = [s for s in ("evaluate", "hybrid", "front") if s in stages]
    if history != 1 and later:
        raise ConfigError(
            f"train.history = {history}: the {' and '.join(later)} stage(s) step one state at "
            "a time and cannot run a forecaster with history > 1; use train.history=1, or "
            "run only the stages that can (e.g. hs-train)"
        )
    return targets


def _check_min(where: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    from solvers.config_schema import ConfigError

    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or null" if optional else "")
        raise ConfigError(f"{where} = {value!r} must be {allowed}")


def _check_top_level(cfg) -> None:
    """The top-level keys (:class:`RunKeys`), the run name and the stage names."""
    from solvers.config_schema import ConfigError, check_kwargs
    from surrogate.stage_records import ON_CHANGE

    top = {k: ({} if k in _NODES or k == "hydra" else _plain_value(cfg[k])) for k in cfg}
    check_kwargs(RunKeys, top, where="config", allow_missing=False)
    check_run_name(top.get("name", "run"))
    _check_min("validate_resimulate", top.get("validate_resimulate", 2), 0)
    unknown = [s for s in top.get("stages", STAGES) if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    if top.get("data_parallel", "auto") not in (True, False, "auto"):
        raise ConfigError(f"data_parallel = {top['data_parallel']!r} must be true, false or auto")
    if top.get("on_change", "refuse") not in ON_CHANGE:
        raise ConfigError(f"on_change = {top['on_change']!r} must be one of {', '.join(ON_CHANGE)}")
    if top.get("resume", True) not in (True, False, "force"):
        raise ConfigError(f"resume = {top['resume']!r} must be true, false or force")


def _check_evaluate(ev: dict[str, Any]) -> None:
    """The ``evaluate`` node: keywords of :func:`surrogate.pipeline.stage_evaluate`."""
    from solvers.config_schema import check_kwargs
    from surrogate.pipeline import stage_evaluate

    check_kwargs(stage_evaluate, ev, where="evaluate", runtime=_EVALUATE_RUNTIME)
    for key in ("num_trajectories", "batch_size", "coarsen_factor"):
        if key in ev:
            _check_min(f"evaluate.{key}", ev[key], 1)
    if "long_rollout_steps" in ev:
        _check_min("evaluate.long_rollout_steps", ev["long_rollout_steps"], 1, optional=True)


def _check_front(cfg, stages) -> None:
    """``stepper`` and the ``front`` node: keywords of :func:`surrogate.front_stage.stage_front`."""
    from solvers.config_schema import ConfigError, check_kwargs
    from surrogate.front_stage import stage_front
    from surrogate.pipeline import STEPPERS

    if cfg.get("stepper", "forecaster") not in STEPPERS:
        raise ConfigError(f"stepper = {cfg.get('stepper')!r} must be one of {', '.join(STEPPERS)}")
    front = _plain(cfg.front) if cfg.get("front") is not None else {}
    check_kwargs(stage_front, front, where="front", runtime=_FRONT_RUNTIME)
    for key in ("num_trajectories", "num_leads", "lead", "repeats"):
        if key in front:
            _check_min(f"front.{key}", front[key], 1)
    if "front" in stages and not front.get("ladder"):
        raise ConfigError("front.ladder: the front stage needs a list of solver grids")
    if "front" in stages and cfg.data.get("store_num_points") is None:
        raise ConfigError(
            "front: the front stage compares a stepper on a coarse grid with solvers on a "
            "ladder of grids; set data.store_num_points (the stepper's grid) below the "
            "solver's num_points"
        )


def _check_hybrid(cfg, target) -> None:
    """The ``hybrid`` node (:class:`HybridKeys`), its sweep, runner, policy and indicators."""
    from solvers.config_schema import ConfigError, check_kwargs

    hybrid = {k: ({} if k == "runner" else v) for k, v in _plain(cfg.hybrid).items()}
    check_kwargs(HybridKeys, hybrid, where="hybrid", allow_missing=False)
    for key in ("num_steps", "num_trajectories", "short_lead_steps"):
        if key in hybrid:
            _check_min(f"hybrid.{key}", hybrid[key], 1)
    sweep = hybrid.get("sweep") or {}
    check_kwargs(SweepKeys, sweep, where="hybrid.sweep")
    runner = cfg.hybrid.runner
    check_kwargs(
        target("hybrid.runner"),
        {k: v for k, v in _plain(runner).items() if k not in ("policy", "indicators")},
        where="hybrid.runner",
        runtime=("solver", "surrogate", "mesh"),
    )
    for i, ind in enumerate(runner.get("indicators") or []):
        where = f"hybrid.runner.indicators[{i}]"
        check_kwargs(target(where), _plain(ind), where=where)
    if runner.get("policy") is None:
        return
    policy = _plain(runner.policy)
    check_kwargs(target("hybrid.runner.policy"), policy, where="hybrid.runner.policy")
    names = policy.get("indicator_name")
    names = [names] if isinstance(names, str) else names
    if sweep.get("indicator") and sweep.get("thresholds") and names is not None:
        if sweep["indicator"] not in names:
            raise ConfigError(
                f"hybrid.sweep.indicator = {sweep['indicator']!r} is not checked by the "
                f"policy (hybrid.runner.policy.indicator_name = {list(names)})"
            )


def check_hybrid_against_solver(cfg, solver) -> None:
    """Build the hybrid runner with the solver in both roles: indicators and policy must fit.

    Run at start-up (the real surrogate exists only after training), so an indicator of a
    diagnostic the solver lacks, or a policy naming an indicator that is not there, fails
    before any work, naming the node.

    Raises:
        ValueError: naming ``hybrid.runner`` and what does not fit.
    """
    from hydra.utils import instantiate

    try:
        instantiate(cfg.hybrid.runner, solver=solver, surrogate=solver)
    except Exception as e:  # noqa: BLE001 - whatever the runner refuses, named
        cause = e.__cause__ or e
        raise ValueError(
            f"hybrid.runner does not fit the solver {type(solver).__name__}: "
            f"{type(cause).__name__}: {cause} (set hybrid.runner.indicators and the policy "
            "for this solver, as configs/experiment/kolmogorov.yaml does)"
        ) from None


class RunNameCheck(Callback):
    """Hydra callback refusing run directories outside ``runs/`` before Hydra creates them.

    Hydra makes the run directory (``runs/${name}``) before calling the entry point, so
    the check runs here, at ``on_run_start``; multirun job directories embed the
    overrides, so a ``..`` component in an override value is refused too. Hydra turns a
    callback's exceptions into warnings, so a refusal prints the error and exits with
    status 1, like the entry points.
    """

    def on_run_start(self, config, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        if "name" not in config:
            return
        if not HydraConfig.initialized():  # the run name may interpolate hydra:runtime.*
            HydraConfig.instance().set_config(config)
        _exit_on_error(lambda: check_run_name(config.name))

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        _exit_on_error(lambda: check_job_dirs(config.hydra.overrides.task))


def check_job_dirs(overrides) -> None:
    """Refuse multirun overrides that would put a job directory outside the sweep directory.

    A job directory is ``<sweep dir>/<job number>-<key=value,...>`` (see
    ``hydra.sweep.subdir`` in ``configs/config.yaml``), so ``..`` components in a value
    climb out of it: ``name=../../../x`` would write beside ``runs/``.

    Raises:
        ConfigError: naming the override.
    """
    from solvers.config_schema import ConfigError

    for override in overrides:
        key, _, values = str(override).partition("=")
        for value in values.split(","):  # each swept value gets its own job directory
            depth = 0
            for part in f"0-{key}={value}".replace("\\", "/").split("/"):
                depth += -1 if part == ".." else part not in ("", ".")
                if depth < 0:
                    raise ConfigError(
                        f"{key}={value}: multirun job directories embed the overrides "
                        "(runs/multirun/<date>/<job>-<key=value,...>), and this value's '..' "
                        "components would put one outside the sweep directory"
                    )


def _exit_on_error(check) -> None:
    """Run ``check``; on an error print it as the entry points do and exit with status 1."""
    try:
        check()
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise SystemExit(f"error: {type(e).__name__}: {e}") from e
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def build_solver(cfg):
    from hydra.utils import instantiate

    return instantiate(cfg.solver, _convert_="all")


def model_name_of(cfg, target=None) -> tuple[str, dict[str, Any]]:
    """Registry name and kwargs of the model node (``_target_`` mapped to its name)."""
    from solvers.registry import resolve_trusted
    from surrogate.models import MODELS

    if target is None:
        target = resolve_trusted(cfg.model.get("_target_"), where="model._target_")
    for name, cls in MODELS.items():
        if cls is target:
            kwargs = {k: v for k, v in _plain(cfg.model).items() if not k.startswith("_")}
            return name, kwargs
    raise ValueError(
        f"model: _target_ {cfg.model._target_!r} is not a registered model ({', '.join(MODELS)})"
    )


# datasets.generate keywords named in its messages -> the overrides that set them here.
_GENERATE_OVERRIDES = {"overwrite=True": "data.overwrite=true", "out_dir": "data.path"}
# Library keywords named in any stage's messages -> the command-line overrides.
_OVERRIDES = {"resume='force'": "resume=force", "resume=False": "resume=false"}


def cli_message(message: str) -> str:
    """An error message naming command-line overrides instead of Python keywords."""
    for keyword, override in _OVERRIDES.items():
        message = message.replace(keyword, override)
    return message


def generate_message(message: str) -> str:
    """A message of :func:`datasets.generate` naming the command-line overrides instead."""
    for keyword, override in _GENERATE_OVERRIDES.items():
        message = message.replace(keyword, override)
    return message


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
    from surrogate.front_stage import add_stage_time, stage_front, stepper_solver
    from surrogate.stage_records import DEPENDS, check_run, record_stage

    require_project_datasets()
    # orbax reports every save at INFO through absl; keep the console for our own progress.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    _enable_precision(cfg)
    check_config(cfg, stages)
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
    solver = build_solver(cfg)
    if "hybrid" in stages:
        check_hybrid_against_solver(cfg, solver)
    run_dir = _run_dir()
    plain = OmegaConf.to_container(cfg, resolve=True)
    if is_primary():  # before config.yaml is rewritten: it must describe what is on disk
        check_run(
            run_dir,
            plain,
            on_change=cfg.get("on_change", "refuse"),
            keep_checkpoints=cfg.get("resume", True) == "force",
        )
    barrier("hs-pipeline:stage-records")
    pipeline.write_run_metadata(run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    data_dir = Path(cfg.data.path)
    timings: dict[str, float] = {}
    forecaster = None
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        log.info("stage %s", stage)
        if stage == "generate":
            data = {k: v for k, v in _plain(cfg.data).items() if k not in _DATA_NON_GENERATE}
            # progress=false silences every bar; data.progress only this one
            progress = bool(data.pop("progress", True)) and bool(cfg.get("progress", True))
            try:
                pipeline.stage_generate(
                    solver,
                    data_dir,
                    data,
                    config={"solver": _plain(cfg.solver), "data": _plain(cfg.data)},
                    progress=progress,
                )
            except FileExistsError as e:
                raise FileExistsError(generate_message(str(e))) from None
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
                stepper=cfg.get("stepper", "forecaster"),
                resume=cfg.get("resume", True),
            )
        elif stage in ("evaluate", "hybrid", "front"):
            if forecaster is None:
                forecaster = pipeline.load_trained(run_dir, data_dir)
            # A stepper trained on coarse-grained data lives on the dataset's grid: the
            # evaluation's baselines and the hybrid runner take the solver rebuilt there.
            own = stepper_solver(solver, forecaster)
            if stage == "evaluate":
                ev = cfg.get("evaluate", {})
                pipeline.stage_evaluate(
                    forecaster, own, data_dir, run_dir, mesh=mesh, **_plain(ev) if ev else {}
                )
            elif stage == "front":
                if is_primary():
                    name, _ = model_name_of(cfg)
                    stage_front(
                        forecaster,
                        data_dir,
                        run_dir,
                        name=f"{cfg.get('stepper', 'forecaster')}-{name}",
                        seed=int(cfg.data.get("seed", 0)),
                        progress=bool(cfg.get("progress", True)),
                        **_plain(cfg.front),
                    )
            else:
                runner = instantiate(cfg.hybrid.runner, solver=own, surrogate=forecaster, mesh=mesh)
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
        if is_primary():  # cumulative over resumes: the front counts data and training cost
            add_stage_time(run_dir, stage, timings[stage])
            if stage in DEPENDS:
                record_stage(run_dir, stage, plain)
        log.info("stage %s done in %.1f s", stage, timings[stage])
    return run_dir


def _hydra_main(stages_fn):
    """Wrap a function of the config in ``hydra.main`` with our config tree.

    First of all (before JAX starts its threads) the process keeps freed memory for reuse:
    :func:`solvers.retain_freed_memory`, worth ~1.3x on a CPU training step.
    """
    import hydra

    from solvers.allocator import retain_freed_memory

    retain_freed_memory()

    config_path = str(Path(__file__).resolve().parents[1] / "configs")

    @hydra.main(version_base=None, config_path=config_path, config_name="config")
    def main(cfg) -> None:
        try:
            run_stages(cfg, stages_fn(cfg))
        except Exception as e:  # one clear line, the traceback only with HYDRA_FULL_ERROR
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {type(e).__name__}: {cli_message(str(e))}", file=sys.stderr)
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
front = _single("front")
report = _single("report")
