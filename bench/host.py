"""What the benchmarks (and the tests that reuse them) need of the machine they run on: a description of
it for the figures, a free loopback port, and whether a server started on one answers yet. Standard
library only, so that any benchmark can import it before Django or torch."""

from __future__ import annotations

import http.client
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

# The settings that point the product at servers; without them it runs on SQLite and embedded Qdrant.
SERVICE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "QDRANT_URL")


def embedded_env() -> dict[str, str]:
    """This process's environment without ``SERVICE_VARIABLES``: for a process on the embedded defaults."""
    return {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}


def machine() -> str:
    """Cores, CPU model, memory and Python version, as the benchmarks report them."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}"


def free_port(ports: range) -> int:
    """A loopback port of ``ports`` that nothing listens on now (connecting to it is refused at once)."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def healthz_wait(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll ``GET /healthz`` on loopback ``port`` until it answers 200 (True); False when ``process``
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.3)
    return False
