"""Progress bars: silent when disabled, plain bounded lines outside a terminal, one helper."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest

from datasets.progress import LineProgress, progress_bar

REPO = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_gets_bounded_plain_lines():
    out = io.StringIO()
    with progress_bar(total=1000, desc="train", unit="step", file=out) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix(loss="1.0")  # forces a refresh (a display call) every step
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # start, one per crossed 10 %, nothing more at close (already at 100 %)
    assert len(lines) == 11, lines
    assert lines[0].startswith("train:   0% 0/1000")
    assert lines[-1].startswith("train: 100% 1000/1000")
    percents = [int(re.match(r"train:\s+(\d+)%", ln).group(1)) for ln in lines]
    assert percents == list(range(0, 101, 10))


def test_resumed_bar_starts_at_initial_and_closes_with_a_last_line():
    out = io.StringIO()
    bar = progress_bar(total=50, initial=20, desc="generate", unit="traj", file=out)
    bar.update(3)  # no refresh (mininterval), no crossing line yet
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "20/50" in lines[0] and "23/50" in lines[1]


def test_unknown_total_writes_a_line_per_interval():
    out = io.StringIO()
    bar = progress_bar(total=None, desc="front", file=out, interval_s=10.0)
    clock = [bar._time()]
    bar._time = lambda: clock[0]  # a fake clock: deterministic intervals
    for _ in range(5):
        clock[0] += 4.0  # a line every third update (12 s > 10 s)
        bar.update(1)
        bar.refresh()
    bar.close()
    lines = out.getvalue().splitlines()
    # start, after 12 s (3 updates), and the last line at close (5 updates)
    assert [ln.split(" [")[0] for ln in lines] == ["front: 0", "front: 3", "front: 5"]


def test_disabled_bar_writes_nothing_and_accepts_every_call():
    out = io.StringIO()
    bar = progress_bar(total=10, desc="x", file=out, enabled=False)
    bar.update(4)
    bar.set_postfix(loss=1.0)
    bar.set_postfix_str("y")
    bar.close()
    assert out.getvalue() == ""


def test_terminal_keeps_the_redrawn_bar():
    out = _Terminal()
    with progress_bar(total=3, desc="t", file=out) as bar:
        bar.update(3)
    assert not isinstance(bar, LineProgress)
    assert "\r" in out.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction_step": 0.0}, r"fraction_step must be in \(0, 1\], got 0.0"),
        ({"fraction_step": 1.5}, r"fraction_step must be in \(0, 1\], got 1.5"),
        ({"interval_s": 0.0}, r"interval_s must be > 0, got 0.0"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        progress_bar(total=1, desc="x", file=io.StringIO(), **kwargs)


def test_every_bar_goes_through_the_helper():
    """No module but the helper builds a tqdm bar itself (each would bypass the rules)."""
    offenders = []
    for package in ("datasets", "solvers", "surrogate"):
        for path in (REPO / package).rglob("*.py"):
            if path.name == "progress.py" and path.parent.name == "datasets":
                continue
            if re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.MULTILINE):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_generation_progress_to_a_non_terminal_is_plain_and_bounded(tmp_path, capsys):
    import datasets
    from tests.datasets.dataset_helpers import GENERATE, ks_solver

    datasets.generate(ks_solver(), tmp_path / "on", **{**GENERATE, "progress": True})
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("generate ")]
    assert 2 <= len(lines) <= 2 + math.ceil(1 / 0.1), lines
    assert "6/6" in lines[-1]
    datasets.generate(ks_solver(), tmp_path / "off", **{**GENERATE, "progress": False})
    assert capsys.readouterr().err == ""
