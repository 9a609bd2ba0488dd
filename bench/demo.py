"""A newcomer's first minutes: ``python -m bench.demo [--json]``.

Clones this repository into a temporary directory (a fresh clone: no virtual environment, no ``var/``),
runs ``make demo`` there and polls the login page until it answers 200: the **first start**, from clone
to first page, ``make install`` included. Then stops the server (Ctrl-C, as a person would) and runs
``make demo`` again until the page answers: the **second start**, which must reuse everything (the
virtual environment, the database, the trained models, the embedding cache).

Each line ``make demo`` prints is timestamped as it arrives, so each start splits into phases: ``make
install`` (until make runs ``manage.py demo``), the Python start (until "• database"), set-up (imports,
training and indexing, until "simapp demo:", with each dataset's training) and the server start (until
the page answers). The clone is removed afterwards unless ``--keep``. Commits only: to
measure uncommitted work, prepare a checkout yourself and pass ``--checkout DIR``. Prints a table and,
last, one JSON line; the 1-minute load average is sampled throughout (other work on the machine makes
the figures upper bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.host import SERVICE_VARIABLES, machine

REPO = Path(__file__).resolve().parent.parent
# The demo must run on the embedded defaults, whatever this shell has configured.
_CLEARED = (
    *SERVICE_VARIABLES,
    "QDRANT_API_KEY",
    "SIMAPP_DATA_DIR",
    "VIRTUAL_ENV",
)


@dataclass
class Start:
    """One ``make demo`` until its page answered: seconds since it began, per marker line."""

    seconds: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)
    lines: list[tuple[float, str]] = field(default_factory=list)


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds, while the benchmark runs."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.samples.append(os.getloadavg()[0])
        return {
            "min": round(min(self.samples), 2),
            "mean": round(sum(self.samples) / len(self.samples), 2),
            "max": round(max(self.samples), 2),
        }


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_demo(
    checkout: Path, env: dict[str, str], url: str, timeout: float, log: Path, echo: bool
) -> tuple[subprocess.Popen[bytes], Start]:
    """Run ``make demo`` and return once ``url`` answers 200, with the process still serving."""
    started = time.perf_counter()
    process = subprocess.Popen(
        ["make", "demo"],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own process group (make, manage.py and the server stop together), with Ctrl-C working even
        # when this benchmark was started in the background (a shell then makes children ignore SIGINT).
        preexec_fn=_own_group_with_sigint,
    )
    result = Start()

    def read() -> None:
        assert process.stdout is not None
        with log.open("ab") as out:
            buffer = b""
            while chunk := process.stdout.read1(65536):  # type: ignore[attr-defined]
                out.write(chunk)
                out.flush()
                buffer += chunk
                *complete, buffer = re.split(rb"[\r\n]", buffer)
                now = time.perf_counter() - started
                for raw in complete:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        result.lines.append((now, line))
                        if echo:
                            print(f"  [{now:7.1f} s] {line}", file=sys.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not answers(url):
        if process.poll() is not None:
            reader.join(timeout=5)
            tail = "\n".join(line for _, line in result.lines[-30:])
            raise SystemExit(f"make demo exited with {process.returncode} before {url} answered:\n{tail}")
        if time.perf_counter() - started > timeout:
            stop(process)
            raise SystemExit(f"{url} did not answer within {timeout:.0f} s; log: {log}")
        time.sleep(0.25)
    result.seconds = time.perf_counter() - started
    result.marks = marks_of(result.lines)
    return process, result


def marks_of(lines: list[tuple[float, str]]) -> dict[str, float]:
    """When each phase ended (seconds since the start), and how long each dataset trained."""
    marks: dict[str, float] = {}
    training: dict[str, float] = {}
    for at, line in lines:
        if "manage.py demo" in line:  # make echoes the command once the environment is installed
            marks.setdefault("installed", at)
        for marker in ("• database", "simapp demo:"):
            if line.startswith(marker):
                marks.setdefault(marker, at)
        if started_training := re.match(r"• (\S+): train ", line):
            training[started_training.group(1)] = at
        if (trained := re.match(r"'(\S+)' now serves ", line)) and trained.group(1) in training:
            marks[f"train {trained.group(1)}"] = at - training[trained.group(1)]
    return marks


def _own_group_with_sigint() -> None:
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the whole group, as a terminal would; then harder if it does not go."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def phases(start: Start) -> dict[str, float]:
    """Seconds of each phase of one start, from the marks its output left."""
    marks = start.marks
    installed, working, ready = marks.get("installed"), marks.get("• database"), marks.get("simapp demo:")
    out: dict[str, float] = {}
    if installed is not None:
        out["install_s"] = round(installed, 1)  # make install: venv and pip (a no-op when installed)
    if installed is not None and working is not None:
        out["python_start_s"] = round(working - installed, 1)  # interpreter, Django, torch imports
    if working is not None and ready is not None:
        out["setup_s"] = round(ready - working, 1)  # migrate, imports, training and indexing
    for name, seconds in marks.items():
        if name.startswith("train "):
            out[name.replace(" ", "_") + "_s"] = round(seconds, 1)
    if ready is not None:
        out["serve_s"] = round(start.seconds - ready, 1)  # runserver start until the page answers
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository to clone (default: this one)")
    parser.add_argument(
        "--checkout", type=Path, help="a fresh checkout to use instead of cloning (kept afterwards)"
    )
    parser.add_argument("--port", type=int, default=8000, help="the demo's port (default 8000)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each start")
    parser.add_argument("--keep", action="store_true", help="keep the clone (and its .venv, var/)")
    parser.add_argument("--echo", action="store_true", help="echo make demo's output, timestamped")
    args = parser.parse_args()

    url = f"http://127.0.0.1:{args.port}/accounts/login/"
    if answers(url):
        raise SystemExit(f"something already answers at {url}: stop it first")
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["DEMO_ARGS"] = f"--addr 127.0.0.1:{args.port}"

    load = LoadSampler()
    load.start()
    began = time.perf_counter()
    if args.checkout:
        checkout, clone_s = args.checkout.resolve(), 0.0
        for leftover in (".venv", "var"):
            if (checkout / leftover).exists():
                raise SystemExit(f"{checkout / leftover} exists: --checkout needs a fresh checkout")
    else:
        checkout = Path(tempfile.mkdtemp(prefix="simapp-demo-clone-")) / "simapp"
        subprocess.run(["git", "clone", "--quiet", str(args.repo), str(checkout)], check=True)
        clone_s = time.perf_counter() - began
    log = checkout.parent / f"{checkout.name}-make-demo.log"
    if not args.json:
        print(f"checkout {checkout}; make demo output in {log}", file=sys.stderr)

    try:
        process, first = start_demo(checkout, env, url, args.timeout, log, args.echo)
        stop(process)
        process, second = start_demo(checkout, env, url, args.timeout, log, args.echo)
        reused = [line for _, line in second.lines if "up to date" in line or "unchanged" in line]
        retrained = [line for _, line in second.lines if re.match(r"• \S+: train ", line)]
        stop(process)
    finally:
        load_avg = load.stop()
        if not args.keep and not args.checkout:
            shutil.rmtree(checkout.parent, ignore_errors=True)

    figures: dict[str, Any] = {
        "benchmark": "demo",
        "clone_s": round(clone_s, 1),
        "first_start_s": round(first.seconds, 1),
        "clone_to_first_page_s": round(clone_s + first.seconds, 1),
        "first": phases(first),
        "second_start_s": round(second.seconds, 1),
        "second": phases(second),
        "second_retrained": retrained,
        "second_reused_lines": len(reused),
        "load_avg_1m": load_avg,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if not args.json:
        print(f"{'step':<52}{'seconds':>9}")
        labels = {
            "install_s": "make install (venv + pip)",
            "python_start_s": "Python, Django and torch start",
            "setup_s": "migrate, import, train, index",
            "serve_s": "server start",
        }
        rows: list[tuple[str, float | None]] = [("git clone", clone_s)]
        for title, start in (("first", first), ("second", second)):
            rows.append((f"{title} make demo until the login page answers", start.seconds))
            for key, seconds in figures[title].items():
                rows.append((f"  {labels.get(key) or key.removesuffix('_s').replace('_', ' ')}", seconds))
            if title == "first":
                rows.append(("clone to first page", clone_s + first.seconds))
        for label, seconds in rows:
            if seconds is not None:
                print(f"{label:<52}{seconds:>9.1f}")
        print(
            f"load average (1 min) min / mean / max: {load_avg['min']} / {load_avg['mean']} / {load_avg['max']}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
