"""A dataset is data: validating or loading one never runs code it names, nor reads files
outside its directory. Manifests are tampered with the way a shared dataset could be."""

from __future__ import annotations

import json
import logging
import sys

import pytest

import datasets
import solvers
from datasets.manifest import MANIFEST_NAME, ManifestError
from datasets.validation import main as validate_main
from surrogate.pipeline import stage_validate
from tests.datasets.dataset_helpers import GENERATE, Shift2D


def _tamper(directory, **changes) -> None:
    path = directory / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """An importable module that, if ever imported, writes a marker file."""
    marker = tmp_path / "imported"
    name = f"hs_probe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n\n"
        "class Boom:\n    def __init__(self, **kwargs):\n        pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def _os_system_manifest(ks_copy, tmp_path):
    marker = tmp_path / "ran"
    _tamper(
        ks_copy,
        solver="not_a_registered_solver",
        solver_class="os:system",
        solver_config={"command": f"touch {marker}"},
    )
    return marker


def test_validate_refuses_os_system_without_running_it(ks_copy, tmp_path):
    marker = _os_system_manifest(ks_copy, tmp_path)
    report = datasets.validate(ks_copy, num_resimulate=0)
    assert not report.passed
    assert not marker.exists()
    text = str(report)
    assert str(ks_copy / MANIFEST_NAME) in text
    assert "'solver_class'" in text and "'os:system'" in text


def test_every_validate_entry_point_refuses_it(ks_copy, tmp_path, capsys):
    """``python -m datasets.validate DIR`` and the validate stage of hs-validate/hs-pipeline."""
    marker = _os_system_manifest(ks_copy, tmp_path)
    assert validate_main([str(ks_copy), "--num-resimulate", "0"]) == 1
    assert "os:system" in capsys.readouterr().out
    with pytest.raises(RuntimeError):
        stage_validate(ks_copy, tmp_path / "run", num_resimulate=0)
    assert not marker.exists()


def test_an_untrusted_module_is_not_even_imported(ks_copy, probe):
    name, marker = probe
    _tamper(ks_copy, solver="not_a_registered_solver", solver_class=f"{name}:Boom")
    report = datasets.validate(ks_copy, num_resimulate=0)
    assert not report.passed
    assert f"{name}:Boom" in str(report)
    assert name not in sys.modules
    assert not marker.exists()


def test_a_trusted_user_module_is_rebuilt(ks_dataset, probe, monkeypatch):
    from datasets.provenance import rebuild_solver

    name, marker = probe
    manifest = {**datasets.read_manifest(ks_dataset), "solver": "user_solver"}
    manifest["solver_class"] = f"{name}:Boom"
    monkeypatch.setattr("solvers.registry._USER_MODULES", [])
    with pytest.raises(solvers.UntrustedCodeError, match="manifest.json: key 'solver_class'"):
        rebuild_solver(manifest)
    solvers.trust_module(name)
    assert type(rebuild_solver(manifest)).__name__ == "Boom"
    assert marker.exists()


@pytest.mark.parametrize(
    "path",
    ["datasets.generation:os.system", "surrogate.cli:Path", "datasets.manifest:ManifestError"],
)
def test_only_solver_classes_of_the_project_are_rebuilt(ks_dataset, path):
    """A trusted module's imports and its non-solver classes are refused too."""
    from datasets.provenance import rebuild_solver

    manifest = {**datasets.read_manifest(ks_dataset), "solver": "x", "solver_class": path}
    with pytest.raises(solvers.UntrustedCodeError, match="key 'solver_class'"):
        rebuild_solver(manifest)


@pytest.mark.parametrize("file", ["../outside.nc", "/etc/hostname", "sub/shard-00000.nc", ".."])
def test_shard_paths_outside_the_directory_are_refused(ks_copy, file):
    manifest = json.loads((ks_copy / MANIFEST_NAME).read_text())
    manifest["shards"][1]["file"] = file
    (ks_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"manifest.json: shards\[1\]\.file = "):
        datasets.read_manifest(ks_copy)
    with pytest.raises(ManifestError, match=r"shards\[1\]\.file"):
        datasets.load_trajectories(ks_copy)
    assert not datasets.validate(ks_copy, num_resimulate=0).passed


def test_generation_warns_when_the_solver_cannot_be_rebuilt_elsewhere(tmp_path, caplog):
    script_solver = type("ScriptShift", (Shift2D,), {"__module__": "__main__"})
    kwargs = {**GENERATE, "num_trajectories": 2, "num_frames": 3, "spinup_steps": 0}
    with caplog.at_level(logging.WARNING, logger="datasets"):
        out = datasets.generate(script_solver(), tmp_path / "d", **kwargs)
    assert "__main__:ScriptShift" in caplog.text and "cannot be re-validated" in caplog.text
    assert datasets.read_manifest(out)["solver_class"] == "__main__:ScriptShift"
