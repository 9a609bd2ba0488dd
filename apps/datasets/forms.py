"""Forms of the dataset pages: importing a file into a dataset, or into a new one."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.common.api import upload_too_large
from apps.datasets.formats import FORMATS, ColumnNames
from apps.datasets.models import Dataset


class ImportForm(forms.Form):
    """A file for ``apps.datasets.services.dataset_import``; the same fields as the import API."""

    file = forms.FileField()
    format = forms.ChoiceField(choices=[(name, name) for name in FORMATS])
    split = forms.CharField(required=False, max_length=100, help_text="clinc150 only: the split to read.")
    key_column = forms.CharField(label="Key column", required=False, max_length=200, initial="key")
    text_column = forms.CharField(label="Text column", required=False, max_length=200, initial="text")
    label_column = forms.CharField(label="Label column", required=False, max_length=200, initial="label")

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        reason = upload_too_large(upload.size)
        if reason:
            raise forms.ValidationError(reason)
        return upload

    def columns(self) -> ColumnNames:
        data = self.cleaned_data
        return ColumnNames(
            key=data["key_column"] or "key",
            text=data["text_column"] or "text",
            label=data["label_column"] or "label",
        )


class NewDatasetImportForm(ImportForm):
    """Import a file into a dataset that this import creates."""

    slug = forms.SlugField(
        max_length=Dataset._meta.get_field("slug").max_length, help_text="Letters, digits, - and _."
    )
    name = forms.CharField(required=False, max_length=Dataset._meta.get_field("name").max_length)

    field_order = ["slug", "name", "file", "format", "split", "key_column", "text_column", "label_column"]

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Dataset.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"dataset '{slug}' exists already; import into it from its page")
        return slug
