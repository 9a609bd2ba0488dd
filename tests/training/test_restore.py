"""An index rebuilt from a version's model files meeting concurrent events: items changed, a retrain."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.datasets.models import Item
from apps.training.index import index_alias, vector_store
from apps.training.models import ModelVersion
from apps.training.restore import IndexRestoreRefused, dataset_index_restore
from tests.factories import ItemFactory
from tests.training.conftest import clinc_records, make_dataset, run_to_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_items_written_and_deleted_while_a_rebuild_works_are_in_step_with_its_index(
    data_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a served v1 of 24 items, and while its index is rebuilt one item is added and one deleted
    # (written straight to the database: whatever indexed them did so before the new index served)
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)
    doomed = Item.objects.filter(dataset=dataset).order_by("id").first()
    assert doomed is not None
    store = vector_store()
    optimize = store.optimize
    added: list[int] = []

    def optimize_while_items_change(collection: str) -> None:
        added.append(ItemFactory(dataset=dataset, key="late", text="what is my account balance").pk)
        Item.objects.filter(pk=doomed.pk).delete()
        optimize(collection)

    monkeypatch.setattr(store, "optimize", optimize_while_items_change)

    # when the index is rebuilt
    build = dataset_index_restore(dataset=dataset)

    # then the served index holds the 24 items there are now: the late one, not the deleted one
    alias = index_alias(dataset)
    assert (build.collection, store.get_alias(alias)) == ("clinc.index_v1", "clinc.index_v1")
    assert store.count(alias) == 24 == Item.objects.filter(dataset=dataset).count()
    assert set(store.get_vectors(alias, added)) == set(added)
    assert store.get_vectors(alias, [doomed.pk]) == {}


def test_a_rebuild_whose_version_stops_serving_meanwhile_leaves_the_alias_alone(
    data_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given v1 and v2 trained, v2 served, the database saying v1 serves (a restore), and while v1's index
    # is rebuilt a retrain's activation makes v2 the active version again
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)
    run_to_end(dataset, epochs=1)
    ModelVersion.objects.filter(dataset=dataset).update(is_active=False)
    ModelVersion.objects.filter(dataset=dataset, number=1).update(is_active=True)
    store = vector_store()
    optimize = store.optimize

    def optimize_while_v2_activates(collection: str) -> None:
        ModelVersion.objects.filter(dataset=dataset).update(is_active=False)
        ModelVersion.objects.filter(dataset=dataset, number=2).update(is_active=True)
        optimize(collection)

    monkeypatch.setattr(store, "optimize", optimize_while_v2_activates)

    # when v1's index is rebuilt
    with pytest.raises(IndexRestoreRefused, match="stopped serving v1 while its index was rebuilt"):
        dataset_index_restore(dataset=dataset)

    # then the alias stays on v2, as the database says, and v1's new collection is dropped
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(2, True), (1, False)]
    assert store.get_alias(index_alias(dataset)) == "clinc.index_v2"
    assert store.list_collections() == ["clinc.index_v2"]
