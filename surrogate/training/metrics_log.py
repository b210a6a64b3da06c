"""The metric log of a training run: ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard).

Under ``jax.distributed`` only process 0 writes; the others keep records in memory. On
resume the log is cut back to the resumed step, so a resumed run's log equals a straight
run's.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path


class MetricsLog:
    """Append-only JSONL + CSV metric log in the run directory; truncated on resume.

    Each record has the keys of :attr:`FIELDS` (``val_nrmse`` is ``None`` between
    validations). With ``tensorboardX`` installed, loss, gradient norm, learning rate and
    validation error also go to ``run_dir/tensorboard``.

    Args:
        run_dir: the run directory (must exist).
        resume_step: keep the existing records up to this step (``None``: start afresh,
            discarding any existing log).
        write: write files (``False`` on processes other than 0: records in memory only).
    """

    FIELDS = (
        "step",
        "loss",
        "grad_norm",
        "lr",
        "rollout_k",
        "val_nrmse",
        "samples_per_s",
        "wall_s",
    )

    def __init__(self, run_dir: Path, resume_step: int | None, *, write: bool = True) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        # Under jax.distributed only process 0 writes; the others keep records in memory.
        self.write = write
        records = self.read(run_dir)
        if resume_step is None:
            records = []
        else:
            records = [r for r in records if r["step"] <= resume_step]
        self.records = records
        self._tb = None
        if write:
            self._rewrite()
            self._tb = _tensorboard_writer(run_dir)

    @staticmethod
    def read(run_dir: str | os.PathLike) -> list[dict]:
        """The records of ``run_dir/metrics.jsonl``, oldest first.

        A torn last line (a crash while appending) ends the log; a missing file gives no
        records.

        Args:
            run_dir: the run directory.

        Returns:
            One dict per logged step.
        """
        p = Path(run_dir) / "metrics.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
        return out

    def _rewrite(self) -> None:
        """Write the kept records anew (JSONL atomically, CSV with its header)."""
        from datasets.plumbing import atomic_write_text

        text = "".join(json.dumps(r) + "\n" for r in self.records)
        atomic_write_text(self.jsonl, text, fsync=False, sync_directory=False)
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.records)

    def append(self, record: dict) -> None:
        """Add one step's record to memory and (when writing) to both files.

        Args:
            record: ``{field: value}`` with the keys of :attr:`FIELDS` (extra keys go to
                the JSONL file only).
        """
        self.records.append(record)
        if not self.write:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore").writerow(record)
        if self._tb is not None:
            for k in ("loss", "grad_norm", "lr", "val_nrmse"):
                if record.get(k) is not None:
                    self._tb.add_scalar(k, record[k], record["step"])


def _tensorboard_writer(run_dir: Path):
    """A ``tensorboardX`` writer when that package is installed, else ``None``."""
    try:
        from tensorboardX import SummaryWriter  # type: ignore[import-not-found]
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
