"""Discovery quality through the product: ``python -m bench.quality [--json]``.

Runs in-process against a fresh temporary data directory (``SIMAPP_DATA_DIR``: SQLite file database,
embedded Qdrant Edge, empty embedding cache), calling the management commands (``call_command``: the
same code as ``manage.py``) and the discovery services, as the admin pages and the API do:

* each ODDS set (cardio, thyroid, annthyroid, shuttle; ``SIMAPP_SHARED_DATA``/odds/*.mat):
  ``import_dataset SLUG PATH --format odds``, ``train SLUG --head identity --wait``, then the AUROC of
  the stored anomaly scores (``AnomalyScore`` rows of the active version) against the file's outlier
  labels, beside a plain kNN detector computed here in NumPy (mean Euclidean distance to the 10 nearest
  other rows on z-scored features, population std), and ``evaluate SLUG PATH --format odds --json``
  (``auroc`` through the index, ``auroc_stored``);
* feedback on a seeded 5 % sample of the items by one user, verdict = the true label (outlier →
  "anomaly", inlier → "normal") through ``discovery.services.anomaly_feedback_set``; then a rescore
  without retraining (``anomaly_rescore``) and a retrain with the default trainable head
  (``train SLUG --wait``: the feedback pairs are its training data). AUROC over all items and over the
  95 % that got no feedback ("unseen": the honest figure, feedback items' own labels leak);
* CLINC150: ``import_dataset`` the train split, ``train clinc150 --wait``, ``evaluate … --split val``:
  kNN accuracy, OOS AUROC, the share of in-scope queries classification calls "unknown" and the share
  of out-of-scope queries it flags.

Prints a Markdown table, then, with ``--json``, one JSON object with every figure as its last line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import SERVICE_VARIABLES, machine

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
CLINC = SHARED / "clinc150" / "data_full_train_val.json"
ODDS_SETS = ("cardio", "thyroid", "annthyroid", "shuttle")
K = 10
FEEDBACK_SHARE = 0.05
SEED = 0


def django_setup(data_dir: Path) -> None:
    """Point the product at a fresh data directory (SQLite file, embedded index), then start Django."""
    for name in SERVICE_VARIABLES:
        os.environ.pop(name, None)
    os.environ["SIMAPP_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def command(*args: str) -> tuple[float, str]:
    """Run one management command in this process; its seconds and its stdout."""
    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    call_command(*args, stdout=out, stderr=err)
    return time.perf_counter() - start, out.getvalue().strip()


def load_odds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    return np.asarray(mat["X"], dtype=np.float64), np.asarray(mat["y"]).reshape(-1).astype(int)


def plain_knn_scores(x: np.ndarray, k: int = K, chunk: int = 1024) -> np.ndarray:
    """Mean Euclidean distance of each row to its ``k`` nearest other rows, features z-scored with the
    population std (a constant feature keeps a unit scale). Exact, in NumPy float64."""
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    sq = np.einsum("ij,ij->i", z, z)
    scores = np.empty(len(z))
    for start in range(0, len(z), chunk):
        q = z[start : start + chunk]
        d2 = sq[start : start + chunk, None] + sq[None, :] - 2.0 * (q @ z.T)  # (c, N)
        d2[np.arange(len(q)), np.arange(start, start + len(q))] = np.inf  # not its own neighbour
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        scores[start : start + len(q)] = np.sqrt(np.maximum(nearest, 0.0)).mean(axis=1)
    return scores


def stored_scores(slug: str, keys: list[str]) -> np.ndarray:
    """The active version's stored anomaly score of each key, in the order given."""
    from apps.discovery.models import AnomalyScore
    from apps.training.models import ModelVersion

    version = ModelVersion.objects.get(dataset__slug=slug, is_active=True)
    by_key = dict(AnomalyScore.objects.filter(version=version).values_list("item__key", "score"))
    return np.asarray([by_key[key] for key in keys])


def odds_run(name: str, user: Any) -> dict[str, Any]:
    from apps.datasets.models import Item
    from apps.discovery import services as discovery
    from simapp.learning import auroc

    path = SHARED / "odds" / f"{name}.mat"
    started = time.perf_counter()
    x, y = load_odds(path)
    keys = [f"row-{i + 1:05d}" for i in range(len(x))]  # as the odds importer names rows
    plain_start = time.perf_counter()
    plain = plain_knn_scores(x)
    plain_s = time.perf_counter() - plain_start

    import_s, _ = command("import_dataset", name, str(path), "--format", "odds")
    index_s, _ = command("train", name, "--head", "identity", "--wait")
    ours = stored_scores(name, keys)
    eval_s, eval_out = command("evaluate", name, str(path), "--format", "odds", "--json")
    evaluated = json.loads(eval_out.splitlines()[-1])

    # Feedback on a seeded sample, verdict = the truth; "unseen" = the items that got none.
    rng = np.random.default_rng(SEED)
    sample = np.sort(rng.choice(len(x), size=round(FEEDBACK_SHARE * len(x)), replace=False))
    unseen = np.ones(len(x), dtype=bool)
    unseen[sample] = False
    item_of = dict(Item.objects.filter(dataset__slug=name).values_list("key", "pk"))
    items = {i.pk: i for i in Item.objects.filter(pk__in=[item_of[keys[r]] for r in sample])}
    feedback_start = time.perf_counter()
    for row in sample:
        verdict = "anomaly" if y[row] == 1 else "normal"
        discovery.anomaly_feedback_set(item=items[item_of[keys[row]]], user=user, verdict=verdict)
    feedback_s = time.perf_counter() - feedback_start
    from apps.labelling.models import Pair

    pairs = Pair.objects.filter(dataset__slug=name, source=Pair.Source.FEEDBACK).count()

    rescore_start = time.perf_counter()
    dataset_id = Item.objects.get(pk=item_of[keys[0]]).dataset_id
    discovery.anomaly_rescore(dataset_id=dataset_id)
    rescore_s = time.perf_counter() - rescore_start
    rescored = stored_scores(name, keys)

    retrain_s, retrain_out = command("train", name, "--wait")
    retrained = stored_scores(name, keys)
    eval_after_s, eval_after_out = command("evaluate", name, str(path), "--format", "odds", "--json")
    evaluated_after = json.loads(eval_after_out.splitlines()[-1])

    anomaly_auroc = auroc(ours, y)
    plain_auroc = auroc(plain, y)
    return {
        "items": len(x),
        "features": int(x.shape[1]),
        "outliers": int(y.sum()),
        "anomaly_auroc": round(anomaly_auroc, 4),
        "plain_knn_auroc": round(plain_auroc, 4),
        "ours_minus_plain": round(anomaly_auroc - plain_auroc, 4),
        "evaluate_auroc_index": round(evaluated["auroc"], 4),
        "evaluate_auroc_stored": round(evaluated["auroc_stored"], 4) if "auroc_stored" in evaluated else None,
        "feedback_items": len(sample),
        "feedback_outliers": int(y[sample].sum()),
        "feedback_pairs": pairs,
        "anomaly_auroc_unseen": round(auroc(ours[unseen], y[unseen]), 4),
        "plain_knn_auroc_unseen": round(auroc(plain[unseen], y[unseen]), 4),
        "auroc_after_feedback_rescore": round(auroc(rescored, y), 4),
        "auroc_after_feedback_rescore_unseen": round(auroc(rescored[unseen], y[unseen]), 4),
        "auroc_after_feedback_retrain": round(auroc(retrained, y), 4),
        "auroc_after_feedback_retrain_unseen": round(auroc(retrained[unseen], y[unseen]), 4),
        "evaluate_auroc_index_after_retrain": round(evaluated_after["auroc"], 4),
        "retrain_summary": retrain_out.splitlines()[-1] if retrain_out else "",
        "seconds": {
            "plain_knn": round(plain_s, 2),
            "import": round(import_s, 2),
            "train_identity": round(index_s, 2),
            "evaluate": round(eval_s, 2),
            "feedback": round(feedback_s, 2),
            "rescore": round(rescore_s, 2),
            "train_retrain": round(retrain_s, 2),
            "evaluate_after_retrain": round(eval_after_s, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }


def clinc_run() -> dict[str, Any]:
    started = time.perf_counter()
    import_s, _ = command(
        "import_dataset", "clinc150", str(CLINC), "--format", "clinc150", "--split", "train"
    )
    train_s, train_out = command("train", "clinc150", "--wait")
    eval_s, eval_out = command(
        "evaluate", "clinc150", str(CLINC), "--format", "clinc150", "--split", "val", "--json"
    )
    metrics = json.loads(eval_out.splitlines()[-1])
    figures: dict[str, Any] = {
        "version": metrics["version"],
        "n": metrics["n"],
        "n_oos": metrics.get("n_oos"),
        "knn_accuracy": round(metrics["knn_accuracy"], 4),
        "accuracy_at_1": round(metrics["accuracy_at_1"], 4),
        "oos_auroc": round(metrics["oos_auroc"], 4),
    }
    for name in ("unknown_threshold", "unknown_rate", "oos_unknown_recall"):
        figures[name] = round(metrics[name], 4) if name in metrics else None
    figures["train_summary"] = train_out.splitlines()[-1] if train_out else ""
    figures["seconds"] = {
        "import": round(import_s, 2),
        "train": round(train_s, 2),
        "evaluate": round(eval_s, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="also print the JSON line (always last)")
    parser.add_argument("--sets", default=",".join(ODDS_SETS), help="ODDS sets to run (comma-separated)")
    parser.add_argument("--no-clinc", action="store_true", help="leave out the CLINC150 part")
    args = parser.parse_args()

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    data_dir = Path(tempfile.mkdtemp(prefix="simapp-bench-quality-"))
    django_setup(data_dir)
    from django.contrib.auth import get_user_model

    from apps.common import background

    user = get_user_model().objects.create_user("bench-reviewer")
    figures: dict[str, Any] = {"benchmark": "quality", "k": K, "feedback_share": FEEDBACK_SHARE, "seed": SEED}
    figures["odds"] = {name: odds_run(name, user) for name in args.sets.split(",") if name}
    if not args.no_clinc:
        figures["clinc150"] = clinc_run()
    background.drain()
    odds = figures["odds"]
    figures["ours_not_worse_than_plain_knn"] = all(
        f["anomaly_auroc"] >= f["plain_knn_auroc"] for f in odds.values()
    )
    figures["feedback_retrain_not_worse_unseen"] = {
        name: f["auroc_after_feedback_retrain_unseen"] >= f["anomaly_auroc_unseen"]
        for name, f in odds.items()
    }
    figures["machine"] = machine()
    figures["load_average_before"] = load_before
    figures["load_average_after"] = round(os.getloadavg()[0], 2)
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    figures["data_dir"] = str(data_dir)
    print_table(figures)
    if args.json:
        print(json.dumps(figures))


def print_table(f: dict[str, Any]) -> None:
    print(
        "| ODDS set | items (outliers) | plain kNN | ours (stored) | ours - plain | evaluate: index / stored |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, s in f["odds"].items():
        stored = "—" if s["evaluate_auroc_stored"] is None else f"{s['evaluate_auroc_stored']:.4f}"
        print(
            f"| {name} | {s['items']:,} ({s['outliers']:,}) | {s['plain_knn_auroc']:.4f} | "
            f"{s['anomaly_auroc']:.4f} | {s['ours_minus_plain']:+.4f} | {s['evaluate_auroc_index']:.4f} / {stored} |"
        )
    print()
    print(
        "| ODDS set | feedback items (outliers) | before: all / unseen | plain kNN unseen | "
        "rescore: all / unseen | retrain: all / unseen | retrain - before (unseen) | seconds (total; retrain) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in f["odds"].items():
        delta = s["auroc_after_feedback_retrain_unseen"] - s["anomaly_auroc_unseen"]
        print(
            f"| {name} | {s['feedback_items']:,} ({s['feedback_outliers']}) | "
            f"{s['anomaly_auroc']:.4f} / {s['anomaly_auroc_unseen']:.4f} | {s['plain_knn_auroc_unseen']:.4f} | "
            f"{s['auroc_after_feedback_rescore']:.4f} / {s['auroc_after_feedback_rescore_unseen']:.4f} | "
            f"{s['auroc_after_feedback_retrain']:.4f} / {s['auroc_after_feedback_retrain_unseen']:.4f} | "
            f"{delta:+.4f} | {s['seconds']['total']:.1f}; {s['seconds']['train_retrain']:.1f} |"
        )
    if "clinc150" in f:
        c = f["clinc150"]

        def fmt(value: Any) -> str:
            return "—" if value is None else f"{value:.4f}"

        print()
        print(
            "| CLINC150 val (served model, through the index) | kNN accuracy | OOS AUROC | unknown threshold | "
            "unknown rate (in scope) | OOS flagged unknown | seconds (import; train; evaluate) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        sec = c["seconds"]
        print(
            f"| v{c['version']}, {c['n']:,} val + {c['n_oos'] or 0} oos_val | {c['knn_accuracy']:.4f} | "
            f"{c['oos_auroc']:.4f} | {fmt(c['unknown_threshold'])} | {fmt(c['unknown_rate'])} | "
            f"{fmt(c['oos_unknown_recall'])} | {sec['import']:.1f}; {sec['train']:.1f}; {sec['evaluate']:.1f} |"
        )
    print()
    print(
        f"ours not worse than plain kNN on every set: {f['ours_not_worse_than_plain_knn']}; "
        f"total {f['total_seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
