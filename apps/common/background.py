"""Background work inside this process (the embedded default, when no Celery broker is configured).

One worker thread, like a Celery worker with concurrency 1: jobs run in order and training gets every
core. Each job gets fresh database connections and closes them when done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def submit(job: Callable[..., Any], *args: Any, what: str = "job") -> Future[None]:
    """Run ``job(*args)`` on the process's job thread; failures are logged, never raised into the caller."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simapp-job")
        executor = _executor

    def run() -> None:
        close_old_connections()
        try:
            job(*args)
        except Exception:
            logger.exception("%s failed in the job thread", what)
        finally:
            connection.close()

    return executor.submit(run)


def drain(timeout: float | None = None) -> None:
    """Wait until the job thread has finished everything submitted so far.

    Commands call it before exiting: a job cut off by interpreter shutdown would lose its work.
    """
    with _lock:
        executor = _executor
    if executor is not None:
        executor.submit(lambda: None).result(timeout=timeout)
