"""``python -m surrogate [overrides]``: the whole pipeline (same as ``hs-pipeline``)."""

from surrogate.cli import pipeline

if __name__ == "__main__":
    pipeline()
