"""gunicorn server hooks for lifewatch's multiprocess metrics.

Reference them from your ``gunicorn.conf.py``::

    from lifewatch.gunicorn import child_exit  # noqa: F401

gunicorn loads hooks by name from the config module, so importing the name
there is all it takes.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from ._exposition import multiprocess_dir

__all__ = ["child_exit"]


def child_exit(server: Any, worker: Any) -> None:
    """Forget a dead worker's live gauges (run by the gunicorn master).

    Without it, the ``liveall`` gauges of a worker that was killed (or
    recycled) stay in ``PROMETHEUS_MULTIPROC_DIR``: ``/metrics`` would keep
    showing its state series, still claiming ``ready``. Its counters and
    histograms are kept, so rates do not drop when a worker is replaced.
    """
    directory = multiprocess_dir()
    if directory is not None:
        mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]
