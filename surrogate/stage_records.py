"""What each stage of a run directory was made with, so ``config.yaml`` never lies.

A pipeline rerun in an existing run directory skips the stages whose outputs are there
(``train: bundle exists``) and rewrites ``config.yaml``. Without a record of the settings
each stage actually ran with, a rerun with ``train.num_steps=300`` would keep the
250-step model and still write ``num_steps: 300`` into ``config.yaml``.

Each stage that finishes records the settings it depends on (:data:`DEPENDS`, flattened
to dotted keys) in ``stages.json``. Before anything runs, :func:`check_run` compares every
recorded stage with the new config: a stage whose settings changed is either refused,
naming the changed keys (``on_change="refuse"``, the default), or redone: its outputs,
and the report's, are removed so that the stage and everything downstream of it run
again (``on_change="redo"``). Downstream stages depend on a superset of their upstream
settings, so a change upstream marks them as well.

Run directories made before these records existed are checked against their
``config.yaml``, the best record there is.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("surrogate.stage_records")

RECORDS = "stages.json"
ON_CHANGE = ("refuse", "redo")

_TRAIN = ("solver", "data", "model", "train", "stepper", "seed")
#: Top-level config nodes each stage's outputs depend on (a stage downstream of another
#: lists a superset of its keys, so an upstream change marks it too).
DEPENDS: dict[str, tuple[str, ...]] = {
    "validate": ("solver", "data", "validate_resimulate"),
    "train": _TRAIN,
    "evaluate": (*_TRAIN, "evaluate"),
    "hybrid": (*_TRAIN, "hybrid"),
    "front": (*_TRAIN, "front"),
}
#: Keys that change speed, logging or file layout, never results.
IGNORED = frozenset(
    {
        "data.progress",
        "data.overwrite",
        "data.num_workers",
        "data.batch_size",
        "evaluate.batch_size",
    }
)
#: What each stage writes into the run directory (removed when it is redone).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "validate": ("validation.json",),
    "train": ("forecaster", "train", "figures/training.png"),
    "evaluate": (
        "evaluation.nc",
        "figures/skill.png",
        "figures/spectra.png",
        "figures/snapshots.png",
        "figures/rollout.gif",
    ),
    "hybrid": (
        "hybrid",
        "figures/hybrid_rmse.png",
        "figures/hybrid_engines.png",
        "figures/hybrid_spectra.png",
        "figures/hybrid_tradeoff.png",
    ),
    "front": ("front.json", "front.md", "figures/front.png"),
}
#: The files whose presence says a stage finished (or left results behind).
_MARKERS: dict[str, tuple[str, ...]] = {
    "validate": ("validation.json",),
    "train": ("forecaster/bundle.json", "train"),
    "evaluate": ("evaluation.nc",),
    "hybrid": ("hybrid",),
    "front": ("front.json",),
}
_REPORT = ("report.md", "report.html")


class StaleRunError(RuntimeError):
    """A run directory holds results made with settings other than the config's."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}`` (lists stay leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def stage_settings(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The flattened settings ``stage``'s outputs depend on (absent nodes are ``None``).

    Args:
        config: the run's resolved config as plain Python values.
        stage: a key of :data:`DEPENDS`.
    """
    if stage not in DEPENDS:
        raise ValueError(f"stage {stage!r} keeps no record; stages with one: {list(DEPENDS)}")
    flat: dict[str, Any] = {}
    for node in DEPENDS[stage]:
        value = config.get(node)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{node}."))
        else:
            flat[node] = value
    # JSON round trip: tuples and lists compare equal to what the record reads back.
    return json.loads(json.dumps({k: v for k, v in flat.items() if k not in IGNORED}))


def read_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The recorded settings per stage (``{}`` when none were recorded)."""
    path = Path(run_dir) / RECORDS
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StaleRunError(
            f"{path} cannot be read ({e}); it records which settings each stage of this run "
            "directory was made with. Remove the run directory, or use another (name=...)"
        ) from None
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise StaleRunError(f"{path} is not a mapping of stage -> settings")
    return records


def record_stage(run_dir: Path, stage: str, config: Mapping[str, Any]) -> None:
    """Record that ``stage`` finished with ``config``'s settings (atomic rewrite)."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    records[stage] = stage_settings(config, stage)
    _write(run_dir, records)


def _write(run_dir: Path, records: Mapping[str, Any]) -> None:
    """Write ``run_dir/stages.json`` atomically (key-sorted JSON, fsynced)."""
    from datasets.plumbing import atomic_write_text, canonical_json

    text = canonical_json(records, indent=1, allow_nan=True)
    atomic_write_text(run_dir / RECORDS, text, sync_directory=False)


def finished(run_dir: Path, stage: str) -> bool:
    """Whether ``stage`` left outputs in ``run_dir``."""
    return any((Path(run_dir) / m).exists() for m in _MARKERS[stage])


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key whose value differs (missing keys read ``<unset>``)."""
    unset = "<unset>"
    return [
        (k, old.get(k, unset), new.get(k, unset))
        for k in sorted(set(old) | set(new))
        if old.get(k, unset) != new.get(k, unset)
    ]


def _legacy_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Records of a run directory made before ``stages.json``: from its ``config.yaml``."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    old = yaml.safe_load(path.read_text()) or {}
    return {s: stage_settings(old, s) for s in DEPENDS if finished(run_dir, s)}


def check_run(
    run_dir: Path,
    config: Mapping[str, Any],
    *,
    on_change: str = "refuse",
    keep_checkpoints: bool = False,
) -> list[str]:
    """Refuse, or clear for a redo, the stages of ``run_dir`` made with other settings.

    Call before ``config.yaml`` is rewritten. Stages that left outputs but whose settings
    differ from ``config``'s are stale.

    Args:
        run_dir: the run directory.
        config: the new run's resolved config (plain Python values).
        on_change: ``"refuse"``: raise, naming each stale stage and its changed keys;
            ``"redo"``: remove each stale stage's outputs, its record and the report, so
            that the stage (and those downstream) run again.
        keep_checkpoints: on a redo, keep the training checkpoints (``train/``), so that a
            training run told ``resume=force`` continues from them.

    Returns:
        The stale stages (removed when redoing; empty when nothing changed).

    Raises:
        StaleRunError: ``on_change="refuse"`` and a stage is stale.
        ValueError: ``on_change`` is not one of :data:`ON_CHANGE`.
    """
    if on_change not in ON_CHANGE:
        raise ValueError(f"on_change must be one of {ON_CHANGE}, got {on_change!r}")
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    if not records and not (run_dir / RECORDS).exists():
        records = _legacy_records(run_dir)
    stale: dict[str, list[tuple[str, Any, Any]]] = {}
    for stage in DEPENDS:
        if stage in records and finished(run_dir, stage):
            diff = changes(records[stage], stage_settings(config, stage))
            if diff:
                stale[stage] = diff
    if not stale:
        return []
    if on_change == "refuse":
        raise StaleRunError(_message(run_dir, stale))
    for stage in stale:
        keep = ("train",) if (stage == "train" and keep_checkpoints) else ()
        _remove(run_dir, [p for p in OUTPUTS[stage] if p not in keep])
        records.pop(stage, None)
        log.warning(
            "on_change=redo: %s was made with other settings (%s); removed its outputs%s",
            stage,
            ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in stale[stage]),
            " (kept the training checkpoints: resume=force)" if keep else "",
        )
    _remove(run_dir, _REPORT)
    _write(run_dir, records)
    return list(stale)


def _remove(run_dir: Path, paths: Iterable[str]) -> None:
    for rel in paths:
        path = run_dir / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _message(run_dir: Path, stale: Mapping[str, list[tuple[str, Any, Any]]]) -> str:
    lines = [
        f"run directory {run_dir} holds results made with other settings, and its "
        "config.yaml would no longer describe them:"
    ]
    for stage, diff in stale.items():
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:6])
        more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
        lines.append(f"  {stage} ({', '.join(OUTPUTS[stage][:2])}): {shown}{more}")
    lines.append(
        "Use another run directory (name=<new name>), undo the override(s), or pass "
        "on_change=redo to remove these stages' outputs and run them again "
        "(with resume=force, training continues from its checkpoints)."
    )
    return "\n".join(lines)
