"""The retraining loop as a user runs it: ``python -m bench.pipeline [--json]``.

In a fresh data directory (SQLite, embedded Qdrant, empty embedding cache): import the CLINC150 train
split, ``manage.py train clinc150 --wait`` from a cold cache, the same again (warm cache: only the head
is trained), then ``manage.py evaluate`` on the val split (with oos_val) against the served model.
Each step is a real ``manage.py`` process, start-up included. Prints a table and, last, one JSON line,
which also holds where each retrain's time went inside the process (the run's ``seconds`` per part:
encode, train, save, embed, index, calibrate, anomaly, activate) and the load average around the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.host import embedded_env

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
CLINC = SHARED / "clinc150" / "data_full_train_val.json"


def manage(env: dict[str, str], *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout.strip()


def run_metrics(data_dir: Path) -> list[dict[str, Any]]:
    """The metrics of the training runs, oldest first, from the benchmark's own SQLite database."""
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        rows = db.execute("SELECT metrics FROM training_trainingrun ORDER BY id").fetchall()
    return [json.loads(row[0] or "{}") for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    data_dir = Path(tempfile.mkdtemp(prefix="simapp-bench-pipeline-"))
    env = embedded_env()
    env["SIMAPP_DATA_DIR"] = str(data_dir)
    manage(env, "migrate", "-v0")
    import_s, _ = manage(
        env, "import_dataset", "clinc150", str(CLINC), "--format", "clinc150", "--split", "train"
    )
    cold_s, cold_out = manage(env, "train", "clinc150", "--wait")
    warm_s, warm_out = manage(env, "train", "clinc150", "--wait")
    eval_s, eval_out = manage(
        env, "evaluate", "clinc150", str(CLINC), "--format", "clinc150", "--split", "val", "--json"
    )
    metrics = json.loads(eval_out.splitlines()[-1])
    cold_run, warm_run = run_metrics(data_dir)[:2]
    figures: dict[str, Any] = {
        "items": 15000,
        "import_seconds": round(import_s, 2),
        "train_cold_seconds": round(cold_s, 2),
        "train_warm_seconds": round(warm_s, 2),
        "warm_over_cold": round(warm_s / cold_s, 3),
        "evaluate_seconds": round(eval_s, 2),
        "clinc150_val_knn_accuracy": round(metrics["knn_accuracy"], 4),
        "clinc150_val_accuracy_at_1": round(metrics["accuracy_at_1"], 4),
        "clinc150_val_oos_auroc": round(metrics["oos_auroc"], 4),
        "served_version": metrics["version"],
        "train_cold_summary": cold_out.splitlines()[-1],
        "train_warm_summary": warm_out.splitlines()[-1],
        "cold_run_seconds": cold_run.get("seconds"),
        "warm_run_seconds": warm_run.get("seconds"),
        "warm_run_epochs": f"{warm_run.get('epochs_run')} run, {warm_run.get('best_epoch')} chosen",
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "data_dir": str(data_dir),
    }
    if not args.json:
        print(f"{'step':<44}{'seconds':>9}")
        for label, key in (
            ("import_dataset clinc150 --split train", "import_seconds"),
            ("train --wait (cold embedding cache)", "train_cold_seconds"),
            ("train --wait (warm cache, second retrain)", "train_warm_seconds"),
            ("evaluate val + oos_val", "evaluate_seconds"),
        ):
            print(f"{label:<44}{figures[key]:>9.1f}")
        print(f"warm / cold: {figures['warm_over_cold']:.1%}")
        print(f"inside the cold run (s): {figures['cold_run_seconds']}")
        print(f"inside the warm run (s): {figures['warm_run_seconds']}")
        print(
            f"served v{figures['served_version']}: val kNN accuracy {figures['clinc150_val_knn_accuracy']:.4f}, "
            f"accuracy@1 {figures['clinc150_val_accuracy_at_1']:.4f}, OOS AUROC {figures['clinc150_val_oos_auroc']:.4f}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
