from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.datasets.models import Dataset
from apps.training import jobs, services
from apps.training.config import TrainConfigError, train_config_from
from apps.training.models import TrainingRun
from apps.training.pipeline import training_run_execute


class Command(BaseCommand):
    # The system checks import every URLconf and view (0.6 s of each retrain's start); migrate, runserver
    # and `check` run them, and nothing here depends on them.
    requires_system_checks: list[str] = []
    help = (
        "Retrain a dataset's model: encode (cached), train, evaluate, index, activate. With --wait (or "
        "without a job broker) it runs here with a progress bar and exits non-zero on failure."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--loss", help="loss name (default follows the data)")
        parser.add_argument("--head", help="head name: identity, skip, linear, mlp")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--lr", type=float)
        parser.add_argument("--batch-size", type=int, dest="batch_size")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--wait", action="store_true", help="run in the foreground until done")

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = Dataset.objects.filter(slug=options["slug"]).first()
        if dataset is None:
            raise CommandError(f"no dataset '{options['slug']}'")
        picked = {name: options[name] for name in ("loss", "head", "epochs", "lr", "batch_size", "seed")}
        foreground = options["wait"] or not jobs.uses_broker()
        services.training_runs_reap()
        try:
            config = train_config_from(dataset=dataset, options=picked)
            started = services.training_run_start(dataset=dataset, config=config, enqueue=not foreground)
        except (TrainConfigError, services.TrainingRefused, jobs.JobsUnavailable) as exc:
            raise CommandError(str(exc)) from None
        run = started.run
        if not started.created:
            raise CommandError(
                f"run {run.pk} of '{dataset.slug}' is already {run.status} ({run.stage}); wait for it or cancel it"
            )
        if not foreground:
            self.stdout.write(f"queued run {run.pk} of '{dataset.slug}'")
            return
        finished = self._run_with_bar(run.pk)
        if finished is None or finished.status != TrainingRun.Status.SUCCEEDED:
            status = finished.status if finished else "not run"
            error = finished.error if finished else ""
            raise CommandError(f"run {run.pk} {status}: {error}".rstrip(": "))
        metrics = finished.metrics
        quality = (
            "the frozen encoder (identity head)"
            if metrics.get("head") == "identity"
            else f"{metrics.get('metric')} {_fmt(metrics.get('value'))} (frozen encoder {_fmt(metrics.get('frozen'))})"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"'{dataset.slug}' now serves v{metrics.get('version')}: {quality}, "
                f"{metrics.get('encoded', {}).get('computed', 0)} items encoded, "
                f"{metrics.get('encoded', {}).get('cached', 0)} from the cache"
            )
        )

    def _run_with_bar(self, run_id: int) -> TrainingRun | None:
        bar = tqdm(
            total=100,
            unit="%",
            bar_format="{desc:<24}{percentage:3.0f}%|{bar}| {elapsed}",
            file=self.stderr._out,
        )

        def on_progress(stage: str, done: int, total: int, progress: float) -> None:
            bar.set_description_str(f"{stage} {done}/{total}", refresh=False)
            bar.update(round(progress * 100) - bar.n)

        try:
            return training_run_execute(run_id=run_id, on_progress=on_progress)
        finally:
            bar.close()


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
