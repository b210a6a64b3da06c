"""Keep freed memory in the process, so that XLA:CPU's scratch buffers stop page-faulting.

XLA:CPU allocates each execution's temporary buffers with ``malloc`` and frees them at the
end of the call. With glibc's defaults, large blocks are ``mmap``-ed and every thread of
XLA's pool allocates from its own arena, whose freed pages go back to the kernel: the next
call faults them in again, 4 KiB at a time, zeroed. Measured on a 2-core VM, a 2D FNO
training step (batch 16, 64^2, width 32) took 85,000 page faults and 160 ms of system time
per step, a third of its wall time (``benchmarks/surrogates.py`` prints ``minor_faults``
and ``sys_ms``).

:func:`retain_freed_memory` sets three ``mallopt`` parameters: one arena for all threads
(``M_ARENA_MAX = 1``), no ``mmap`` below 1 GiB (``M_MMAP_THRESHOLD``) and no trimming of
the heap's top (``M_TRIM_THRESHOLD``). Freed blocks then stay in the heap and are reused by
the next call: the same step takes 0-8,000 faults and runs about 1.3x faster. The price is
that the process keeps its peak heap until it exits, as PyTorch's and XLA:GPU's caching
allocators do.

The ``hs-*`` entry points, the dataset generation workers and the benchmarks call it first
thing. In a script of your own, call it before the first JAX computation (threads that
already allocated keep their arenas)::

    import solvers; solvers.retain_freed_memory()

It does nothing (and returns False) off glibc, or when ``HS_RETAIN_FREED_MEMORY=0`` is set
(or the memory tuning is already set by ``GLIBC_TUNABLES``'s ``glibc.malloc.*`` keys).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("solvers")

# mallopt parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ENV_SWITCH = "HS_RETAIN_FREED_MEMORY"

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Tune glibc's ``malloc`` to keep and reuse freed memory (module docstring).

    Idempotent: later calls return the first call's result.

    Returns:
        True if the three parameters were set; False off glibc (macOS, musl), with
        ``HS_RETAIN_FREED_MEMORY=0``, when ``GLIBC_TUNABLES`` already sets
        ``glibc.malloc`` parameters (the user's choice wins), or if glibc refused one.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always has mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, 1) == 1
    # glibc caps the threshold at HEAP_MAX_SIZE / 2 in some versions: fall back to the cap.
    ok &= mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 or mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:  # pragma: no cover - depends on the libc
        log.warning("glibc refused a mallopt parameter; memory tuning is partial")
    _applied = ok
    return ok
