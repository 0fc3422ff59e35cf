"""numpy's BLAS on one thread for the small linear algebra done beside the network.

Why: OpenBLAS's worker threads busy-wait for a while after each call they share. The rig
alignment (pooled homography fits: an SVD over thousands of matches) woke them on every pair, and
on a 2-core machine they then spun through the next network pass: in the demo's replay the
guided passes took 140-200 ms instead of 70-100 (BENCHMARKS.md, 2026-12-06). The network runtimes
keep their own thread pools; these fits are small and gain nothing from threads.

threadpoolctl sets the count around the code that calls BLAS (about 10 us a time) instead of for
the whole process, which a library should not decide for the program that imports it. Without
threadpoolctl the work runs as before.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_local = threading.local()  # per thread: how deep in one_thread(), and its limiter
_controller_lock = threading.Lock()
_controllers = []


def _controller():
    """threadpoolctl's controller of the BLAS libraries loaded now (numpy's), or None."""
    with _controller_lock:
        if not _controllers:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                return None
            _controllers.append(ThreadpoolController().select(user_api="blas"))
        return _controllers[0]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """BLAS calls made inside, by this thread, run on it alone. Each thread sets and restores its
    own limit, nested uses counted (the node's pair loop, a background match and a calibration fit
    may overlap). Best effort in helper threads: OpenBLAS 0.3.31 ignores a count set from another
    thread once the main thread has set one (seen here); the pair loop is the one that matters."""
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        controller = _controller()
        _local.limiter = controller.limit(limits=1) if controller is not None else None
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth -= 1
        if _local.depth == 0 and _local.limiter is not None:
            _local.limiter.restore_original_limits()
            _local.limiter = None
