from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from apps.datasets.formats import text_hash
from apps.datasets.models import Dataset, Item
from apps.labelling.models import Pair


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    slug = factory.Sequence(lambda n: f"ds{n}")
    name = factory.LazyAttribute(lambda o: o.slug.upper())
    modality = Dataset.Modality.TEXT
    encoder = "minilm"


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    dataset = factory.SubFactory(DatasetFactory)
    key = factory.Sequence(lambda n: f"item{n}")
    text = factory.Sequence(lambda n: f"text number {n}")
    label = ""
    content_hash = factory.LazyAttribute(lambda o: text_hash(o.text))


class PairFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pair

    dataset = factory.SubFactory(DatasetFactory)
    item_a = factory.SubFactory(ItemFactory, dataset=factory.SelfAttribute("..dataset"))
    item_b = factory.SubFactory(ItemFactory, dataset=factory.SelfAttribute("..dataset"))
    score = 1.0
    source = Pair.Source.IMPORT
