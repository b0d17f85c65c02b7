"""gunicorn server hooks for lifewatch's multiprocess metrics.

Reference them from your ``gunicorn.conf.py`` (gunicorn finds hooks by name)::

    from lifewatch.gunicorn import child_exit  # noqa: F401
"""

from __future__ import annotations

from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from ._exposition import multiprocess_dir

__all__ = ["child_exit"]


def child_exit(server: Any, worker: Any) -> None:
    """Forget a dead worker's live gauges (run by the gunicorn master).

    Else a killed worker's ``liveall`` state series stay in
    ``PROMETHEUS_MULTIPROC_DIR``, still claiming ``ready``. Its counters and
    histograms stay, so rates do not drop when a worker is replaced.
    """
    directory = multiprocess_dir()
    if directory is not None:
        mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]
