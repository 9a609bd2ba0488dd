from __future__ import annotations

import math

import pytest
import torch

from simapp.learning import LOSS_NAMES, TripletLoss, create_loss

C, M, D = 4, 4, 8


def _separable_groups() -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes x 4 items in 8-D: class means far apart relative to the noise."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(C, D, generator=g) * 2
    labels = torch.arange(C).repeat_interleave(M)  # (16,)
    return centres[labels] + 0.8 * torch.randn(C * M, D, generator=g), labels


def _pairs_from_groups(x: torch.Tensor, labels: torch.Tensor):
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return x[i], x[j], (labels[i] == labels[j]).float()


def _loss_value(loss, head, x, labels) -> torch.Tensor:
    if loss.input_kind == "groups":
        return loss(head(x), labels)
    e = head(x)
    if loss.name == "mnrl":
        # One positive pair per class: in-batch negatives must not share the anchor's class.
        return loss(e[0::M], e[1::M], torch.ones(C))
    a, b, scores = _pairs_from_groups(e, labels)
    return loss(a, b, scores)


# Lowest value each loss can reach on these batches: SupCon is bounded below by log(#positives).
FLOOR = {"supcon": math.log(M - 1)}

LOSS_CASES = [
    ("contrastive", {}),
    ("cosent", {}),
    ("mnrl", {}),
    ("triplet", {"mining": "all"}),
    ("triplet", {"mining": "hard"}),
    ("triplet", {"mining": "semi-hard"}),
    ("supcon", {}),
    ("arcface", {"num_classes": C, "embedding_dim": D}),
]


@pytest.mark.parametrize(
    ("name", "kwargs"), LOSS_CASES, ids=[f"{n}-{k.get('mining', '')}" for n, k in LOSS_CASES]
)
def test_loss_decreases_on_a_separable_problem(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    x, labels = _separable_groups()
    head = torch.nn.Linear(D, D)
    loss = create_loss(name, **kwargs)
    optimizer = torch.optim.Adam([*head.parameters(), *loss.parameters()], lr=0.01)
    floor = FLOOR.get(name, 0.0)
    initial = float(_loss_value(loss, head, x, labels).detach())

    for _ in range(100):
        value = _loss_value(loss, head, x, labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    final = float(_loss_value(loss, head, x, labels).detach())

    assert initial > floor
    assert floor <= final < floor + 0.5 * (initial - floor)


def test_unknown_loss_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="valid: contrastive, cosent, mnrl, triplet, supcon, arcface"):
        create_loss("focal")
    assert LOSS_NAMES == ("contrastive", "cosent", "mnrl", "triplet", "supcon", "arcface")


def test_unknown_triplet_mining_is_rejected() -> None:
    with pytest.raises(ValueError, match="valid: all, hard, semi-hard"):
        create_loss("triplet", mining="easy")


# ------------------------------------------------------------------------------- values from theory

E = torch.eye(D)  # orthonormal embeddings: cosine 1 with itself, 0 with any other


def test_contrastive_is_zero_when_positives_coincide_and_negatives_clear_the_margin() -> None:
    loss = create_loss("contrastive", margin=0.5)
    a = torch.stack([E[0], E[1]])
    b = torch.stack([E[0], E[2]])  # a positive at distance 0, a negative at cosine distance 1 > 0.5

    assert float(loss(a, b, torch.tensor([1.0, 0.0]))) == 0.0


def test_contrastive_penalises_a_negative_inside_the_margin() -> None:
    loss = create_loss("contrastive", margin=0.5)
    b = torch.tensor([[math.cos(0.5), math.sin(0.5)]])  # cosine distance 1 - cos(0.5) = 0.1224
    d = 1 - math.cos(0.5)

    value = float(loss(torch.tensor([[1.0, 0.0]]), b, torch.tensor([0.0])))

    assert value == pytest.approx((0.5 - d) ** 2, rel=1e-5)


def test_cosent_is_zero_without_ordered_pairs_and_log2_for_a_tie_that_should_be_ordered() -> None:
    loss = create_loss("cosent", scale=20.0)
    a = torch.stack([E[0], E[1]])
    b = torch.stack([E[2], E[3]])  # both pairs have cosine 0

    assert float(loss(a, b, torch.tensor([0.5, 0.5]))) == 0.0
    assert float(loss(a, b, torch.tensor([1.0, 0.0]))) == pytest.approx(math.log(2), rel=1e-6)


def test_cosent_prefers_the_order_of_the_scores() -> None:
    loss = create_loss("cosent", scale=2.0)
    a = torch.stack([E[0], E[0]])
    b = torch.stack([E[0], E[1]])  # cosines 1 and 0

    right_order = float(loss(a, b, torch.tensor([1.0, 0.0])))
    wrong_order = float(loss(a, b, torch.tensor([0.0, 1.0])))

    assert right_order == pytest.approx(math.log1p(math.exp(-2)), rel=1e-6)
    assert wrong_order == pytest.approx(math.log1p(math.exp(2)), rel=1e-6)


def test_mnrl_matches_the_softmax_formula_and_ignores_negative_pairs_as_anchors() -> None:
    loss = create_loss("mnrl", scale=2.0)
    a = E[:4]
    b = E[:4]  # every positive pair has cosine 1, every in-batch negative cosine 0
    expected = math.log(1 + 3 * math.exp(-2))

    assert float(loss(a, b, torch.ones(4))) == pytest.approx(expected, rel=1e-6)
    # Pair 3 as a negative: it stops being an anchor, its item still counts as a negative.
    assert float(loss(a, b, torch.tensor([1.0, 1.0, 1.0, 0.0]))) == pytest.approx(expected, rel=1e-6)
    assert float(loss(a, b, torch.zeros(4))) == 0.0


def test_supcon_reaches_its_lower_bound_log_of_the_positive_count() -> None:
    loss = create_loss("supcon", temperature=0.05)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    e = E[labels]  # each class collapsed onto its own orthogonal direction

    # Each anchor has 2 positives at cosine 1 and 3 negatives at cosine 0.
    per_positive = -math.log(math.exp(20) / (2 * math.exp(20) + 3))
    assert float(loss(e, labels)) == pytest.approx(per_positive, rel=1e-5)
    assert per_positive > math.log(2)


def _supcon_by_autograd(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon written as plain tensor operations, for autograd to differentiate."""
    e = torch.nn.functional.normalize(embeddings, dim=-1)
    eye = torch.eye(len(labels), dtype=torch.bool)
    logits = (e @ e.T / temperature).masked_fill(eye, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(~positives, 0.0)
    anchors = positives.any(1)
    return (-log_prob.sum(1)[anchors] / positives.sum(1)[anchors]).mean()


def test_supcon_written_out_gradient_equals_autograds_of_the_formula() -> None:
    loss = create_loss("supcon", temperature=0.1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])  # the item of class 2 is an anchor without positives
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)

    value = loss(x, labels)
    (grad,) = torch.autograd.grad(value, x)
    expected = _supcon_by_autograd(x, labels, 0.1)
    (expected_grad,) = torch.autograd.grad(expected, x)

    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (x,))


def test_supcon_under_bfloat16_autocast_stays_close_to_float32() -> None:
    loss = create_loss("supcon")
    x, labels = _separable_groups()
    x.requires_grad_(True)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(x, labels)
    (low_grad,) = torch.autograd.grad(low, x)
    full = loss(x, labels)
    (full_grad,) = torch.autograd.grad(full, x)

    assert low.dtype == torch.float32
    assert float(low.detach()) == pytest.approx(float(full.detach()), rel=2e-2)
    assert float((low_grad - full_grad).norm() / full_grad.norm()) < 0.05


def test_arcface_matches_the_margin_formula_on_its_own_centres() -> None:
    loss = create_loss("arcface", num_classes=3, embedding_dim=D, scale=2.0, margin=0.3)
    with torch.no_grad():
        loss.centres.copy_(E[:3])
    labels = torch.tensor([0, 1, 2])

    # On its centre: theta = 0, target logit 2 cos(0.3), the other two 2 cos(pi/2) = 0.
    target = 2 * math.cos(0.3)
    expected = -math.log(math.exp(target) / (math.exp(target) + 2))
    # rel 1e-4: sin(theta) is computed as sqrt(max(1 - cos^2, 1e-9)) to keep its gradient finite.
    assert float(loss(E[labels], labels).detach()) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("mining", ["all", "hard", "semi-hard"])
def test_triplet_is_zero_for_orthogonal_classes(mining: str) -> None:
    loss = create_loss("triplet", mining=mining, margin=0.2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])

    # d(a, p) = 0, d(a, n) = 1 > margin; negatives orthogonal, so the spread regulariser is 0 too.
    assert float(loss(E[labels], labels)) == 0.0


@pytest.mark.parametrize("mining", ["all", "hard", "semi-hard"])
def test_triplet_on_a_collapsed_batch_costs_the_margin_plus_the_spread_penalty(mining: str) -> None:
    loss = create_loss("triplet", mining=mining, margin=0.2, spread_weight=1.0)
    labels = torch.tensor([0, 0, 1, 1])
    collapsed = torch.ones(4, D)

    # Every triplet costs the margin; negatives have cosine 1: mean(s)^2 + (mean(s^2) - 1/D) = 2 - 1/D.
    assert float(loss(collapsed, labels)) == pytest.approx(0.2 + 2 - 1 / D, rel=1e-5)


def test_semi_hard_mining_picks_per_anchor_negatives_on_a_hand_computed_example() -> None:
    # 1-D points: class A at 0.0, 1.0; class B at 0.4, 1.8, 3.0 (Euclidean distance).
    x = torch.tensor([[0.0], [1.0], [0.4], [1.8], [3.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    loss = create_loss("triplet", mining="semi-hard", distance="euclidean", margin=0.2, spread_weight=0.0)

    anchors, positives, negatives = loss.mine(x, labels)

    # For each (a, p): the nearest negative farther from *that anchor* than p; none -> its farthest.
    #   (0,1): d_ap 1.0, negatives 0.4 / 1.8 / 3.0        -> 3
    #   (1,0): d_ap 1.0, negatives 0.6 / 0.8 / 2.0        -> 4
    #   (2,3): d_ap 1.4, negatives 0.4 / 0.6 (none >1.4)  -> farthest: 1
    #   (2,4): d_ap 2.6, same negatives                   -> farthest: 1
    #   (3,2): d_ap 1.4, negatives 1.8 / 0.8              -> 0
    #   (3,4): d_ap 1.2, negatives 1.8 / 0.8              -> 0
    #   (4,2): d_ap 2.6, negatives 3.0 / 2.0              -> 0
    #   (4,3): d_ap 1.2, negatives 3.0 / 2.0              -> 1
    triplets = sorted(zip(anchors.tolist(), positives.tolist(), negatives.tolist(), strict=True))
    assert triplets == [
        (0, 1, 3),
        (1, 0, 4),
        (2, 3, 1),
        (2, 4, 1),
        (3, 2, 0),
        (3, 4, 0),
        (4, 2, 0),
        (4, 3, 1),
    ]
    # Only (2,3,1): 1.4 - 0.6 + 0.2 = 1.0 and (2,4,1): 2.6 - 0.6 + 0.2 = 2.2 violate the margin.
    assert float(loss(x, labels)) == pytest.approx((1.0 + 2.2) / 8, abs=1e-5)


def test_hard_mining_picks_each_anchors_farthest_positive_and_nearest_negative() -> None:
    x = torch.tensor([[0.0], [1.0], [0.4], [1.8], [3.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    loss = create_loss("triplet", mining="hard", distance="euclidean", spread_weight=0.0)

    triplets = sorted(zip(*(t.tolist() for t in loss.mine(x, labels)), strict=True))

    assert triplets == [(0, 1, 2), (1, 0, 2), (2, 4, 0), (3, 2, 1), (4, 2, 1)]


def test_spread_regulariser_prevents_collapse_under_triplet_training() -> None:
    labels = torch.arange(8).repeat_interleave(4)

    def train(spread_weight: float) -> float:
        g = torch.Generator().manual_seed(0)
        embeddings = torch.nn.Parameter(torch.ones(32, 16) + 0.01 * torch.randn(32, 16, generator=g))
        loss = create_loss("triplet", mining="hard", spread_weight=spread_weight)
        optimizer = torch.optim.Adam([embeddings], lr=0.02)
        for _ in range(100):
            value = loss(embeddings, labels)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        return TripletLoss.collapse_ratio(embeddings)

    start = TripletLoss.collapse_ratio(torch.ones(32, 16) + 0.01 * torch.randn(32, 16))
    with_regulariser, without = train(1.0), train(0.0)

    assert start > 0.99
    assert with_regulariser < 0.3
    assert without > 0.5
