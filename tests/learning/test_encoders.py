from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from simapp.learning import (
    EmbeddingCache,
    SentenceTransformerEncoder,
    SimilarityModel,
    TrainableEncoderError,
    VectorEncoder,
    content_hash,
    create_encoder,
    create_head,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))


def _sts_rows(*line_numbers: int) -> list[tuple[float, str, str]]:
    """Rows of the real STS-B dev file (1-based line numbers): (score, sentence 1, sentence 2)."""
    lines = (SHARED_DATA / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines()
    rows = []
    for number in line_numbers:
        fields = lines[number - 1].split("\t")[:7]
        rows.append((float(fields[4]), fields[5], fields[6]))
    return rows


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    encoder = create_encoder("minilm", device="cpu")
    assert isinstance(encoder, SentenceTransformerEncoder)
    return encoder


@pytest.mark.slow
def test_minilm_embeds_real_sentences_offline(minilm: SentenceTransformerEncoder) -> None:
    (same_score, a1, a2), (unrelated_score, b1, b2) = _sts_rows(1, 48)
    assert (same_score, unrelated_score) == (5.0, 0.0)

    vectors = minilm.encode([a1, a2, b1, b2])

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (minilm.dim, minilm.distance, minilm.trainable) == (384, "cosine", False)
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[2] @ vectors[3])
    assert paraphrase > 0.9
    assert unrelated < 0.2
    # Alone or in a batch (different padding), the same sentence gets the same vector up to float noise.
    np.testing.assert_allclose(minilm.encode([a1])[0], vectors[0], atol=1e-6)


@pytest.mark.slow
def test_minilm_fingerprint_is_stable_and_its_config_recreates_it(minilm: SentenceTransformerEncoder) -> None:
    assert len(minilm.fingerprint) == 64
    assert minilm.fingerprint == minilm.fingerprint
    assert minilm.get_config_dict() == {"name_or_path": "minilm", "normalize": True, "max_seq_length": 256}


@pytest.mark.slow
def test_minilm_through_the_cache_and_a_saved_model(
    minilm: SentenceTransformerEncoder, tmp_path: Path
) -> None:
    texts = [row[1] for row in _sts_rows(3, 7, 60)]
    cache = EmbeddingCache(tmp_path / "cache", minilm)
    model = SimilarityModel.from_encoder(minilm, create_head("skip", minilm.dim), {"dataset": "sts"})
    model.save(tmp_path / "model")

    loaded = SimilarityModel.load(tmp_path / "model")
    first = loaded.encode(texts, cache=cache)
    again = loaded.encode(texts, cache=cache)

    assert (cache.last_stats.hits, cache.last_stats.misses) == (3, 0)
    assert cache.stats.misses == 3
    # The skip head starts at the identity: the model's vectors are the encoder's, normalised.
    np.testing.assert_allclose(first, minilm.encode(texts), atol=1e-6)
    np.testing.assert_array_equal(first, again)
    assert loaded.encoder_fingerprint == minilm.fingerprint
    assert loaded.metadata == {"dataset": "sts"}


@pytest.mark.slow
def test_minilm_answers_from_its_files_and_loads_the_model_only_to_encode(
    minilm: SentenceTransformerEncoder, tmp_path: Path
) -> None:
    texts = [row[1] for row in _sts_rows(3, 7)]
    EmbeddingCache(tmp_path / "cache", minilm).get_or_compute([content_hash(t) for t in texts], texts)

    fresh = create_encoder("minilm", device="cpu")
    assert isinstance(fresh, SentenceTransformerEncoder)
    cache = EmbeddingCache(tmp_path / "cache", fresh)
    cached = cache.get_or_compute([content_hash(t) for t in texts], texts)

    # A retrain whose items are all cached: same fingerprint, dimension and config, no model loaded.
    assert (cache.last_stats.hits, cache.last_stats.misses) == (2, 0)
    assert not fresh.loaded
    assert (fresh.fingerprint, fresh.dim, fresh.get_config_dict()) == (
        minilm.fingerprint,
        minilm.dim,
        minilm.get_config_dict(),
    )
    # Encoding loads it, and the loaded model is what the files described.
    np.testing.assert_allclose(fresh.encode(texts), cached, atol=1e-6)
    assert fresh.loaded
    assert (fresh.model.get_embedding_dimension(), fresh.model.max_seq_length) == (384, 256)


@pytest.mark.slow
def test_unfrozen_sentence_transformer_is_refused_by_the_cache(
    minilm: SentenceTransformerEncoder, tmp_path: Path
) -> None:
    minilm.model.requires_grad_(True)
    try:
        assert minilm.trainable
        with pytest.raises(TrainableEncoderError):
            EmbeddingCache(tmp_path / "cache", minilm)
    finally:
        minilm.model.requires_grad_(False)


def test_unknown_encoder_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="valid: minilm, vector, or the path of a local sentence-transformers"
    ):
        create_encoder("bert-base-uncased")
    with pytest.raises(ValueError, match="valid: minilm, vector"):
        create_encoder(str(tmp_path))  # a directory without sentence-transformers files


def test_vector_encoder_standardises_with_fitted_statistics() -> None:
    features = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])

    encoder = VectorEncoder.fit(features)

    assert (encoder.distance, encoder.dim, encoder.trainable) == ("euclidean", 3, False)
    np.testing.assert_array_equal(encoder.encode(features), [[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]])
    rebuilt = create_encoder(**encoder.get_config_dict())
    assert rebuilt.fingerprint == encoder.fingerprint
    assert VectorEncoder.fit(features * 2).fingerprint != encoder.fingerprint
    with pytest.raises(ValueError, match="dimension 3"):
        encoder.encode([[1.0, 2.0]])


def test_model_round_trips_with_a_vector_encoder(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(20, 4)) * 5 + 3
    encoder = VectorEncoder.fit(features)
    head = create_head("linear", 4)
    model = SimilarityModel.from_encoder(encoder, head, {"run": 7})

    model.save(tmp_path / "model")
    loaded = SimilarityModel.load(tmp_path / "model")

    assert loaded.distance == "euclidean"
    assert loaded.create_encoder().fingerprint == encoder.fingerprint
    vectors = loaded.encode(features)
    np.testing.assert_allclose(vectors, encoder.encode(features), rtol=1e-6)  # not normalised: Euclidean
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "head.safetensors",
        "head_config.json",
        "model.json",
    ]
    assert content_hash(features[0]) == content_hash(list(features[0]))
