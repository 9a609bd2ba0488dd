"""Celery application. Workers: ``celery -A simapp worker -Q gpu,default``.

Without ``CELERY_BROKER_URL`` nothing is sent here: jobs run in a background thread of the web process.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")

app = Celery("simapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
