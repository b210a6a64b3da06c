"""``python -m datasets.validate PATH``: validate a dataset, exit code 1 on failure.

The implementation lives in :mod:`datasets.validation`; this module is only the command
line (a separate name, so that ``datasets.validate`` stays the function).
"""

import sys

from datasets.validation import main

if __name__ == "__main__":
    sys.exit(main())
