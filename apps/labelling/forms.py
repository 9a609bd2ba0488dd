"""What the labelling page posts: the pair on screen, the strategy, and the answer."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.labelling.queue import STRATEGIES

MAX_ID = 2**63 - 1  # a primary key; larger numbers would overflow the database's integer


class PairForm(forms.Form):
    """The pair on screen (item ids) and the strategy that chose it: posted by skip and undo."""

    a = forms.IntegerField(min_value=1, max_value=MAX_ID)
    b = forms.IntegerField(min_value=1, max_value=MAX_ID)
    strategy = forms.ChoiceField(
        choices=list(STRATEGIES.items()),
        required=False,
        error_messages={
            "invalid_choice": f"Unknown strategy '%(value)s'; choose one of: {', '.join(STRATEGIES)}."
        },
    )

    def __init__(self, *args: Any, pair_required: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["a"].required = self.fields["b"].required = pair_required

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("a") is not None and data.get("a") == data.get("b"):
            raise forms.ValidationError("A pair needs two different items.")
        if not data.get("strategy"):
            data["strategy"] = "random"
        return data


class AnswerForm(PairForm):
    """The answer to the pair on screen: "1" or "0" (binary), "1" to "5" (graded); the dataset's
    ``label_mode`` decides which (``LabellingOptions.score_of``)."""

    answer = forms.CharField(max_length=8)


def form_problem(form: forms.Form) -> str:
    """The form's first error as one sentence."""
    for field, errors in form.errors.items():
        if field in ("__all__", "strategy"):
            return str(errors[0])
        return f"{field}: {errors[0]}"
    return "The request is not valid."
