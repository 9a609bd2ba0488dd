from __future__ import annotations

from django.apps import AppConfig


class LabellingConfig(AppConfig):
    name = "apps.labelling"
    label = "labelling"
    verbose_name = "Labelling"
