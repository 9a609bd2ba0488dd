from __future__ import annotations

import pytest
import torch

from simapp.learning import HEAD_NAMES, create_head, load_head
from simapp.learning.heads import head_from_config_dict

D = 16

# (name, kwargs, output_dim): every head and the shape variants that change its initialisation.
HEAD_CASES = [
    ("identity", {}, D),
    ("skip", {}, D),
    ("skip", {"hidden_dim": 48}, D),
    ("linear", {}, D),
    ("linear", {"output_dim": 24}, 24),
    ("mlp", {}, D),
    ("mlp", {"hidden_dim": 40, "output_dim": 20}, 20),
]
IDS = [f"{name}-{kwargs}" for name, kwargs, _ in HEAD_CASES]


def _inputs() -> torch.Tensor:
    return torch.randn(32, D, generator=torch.Generator().manual_seed(0)) * 3


@pytest.mark.parametrize(("name", "kwargs", "output_dim"), HEAD_CASES, ids=IDS)
def test_head_starts_exactly_at_the_identity(name: str, kwargs: dict, output_dim: int) -> None:
    torch.manual_seed(1)
    head = create_head(name, D, **kwargs).eval()
    x = _inputs()

    y = head(x)

    assert head.output_dim == output_dim
    assert y.shape == (32, output_dim)
    assert torch.equal(y[:, :D], x)
    assert torch.equal(y[:, D:], torch.zeros(32, output_dim - D))


@pytest.mark.parametrize(("name", "kwargs", "output_dim"), HEAD_CASES[1:], ids=IDS[1:])
def test_head_leaves_the_identity_after_one_step(name: str, kwargs: dict, output_dim: int) -> None:
    torch.manual_seed(1)
    head = create_head(name, D, **kwargs)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    x = _inputs()
    target = torch.randn(32, output_dim, generator=torch.Generator().manual_seed(2))

    torch.nn.functional.mse_loss(head(x), target).backward()
    optimizer.step()

    assert not torch.allclose(head(x)[:, :D], x)


@pytest.mark.parametrize(("name", "kwargs", "output_dim"), HEAD_CASES, ids=IDS)
def test_head_round_trips_save_and_load(tmp_path, name: str, kwargs: dict, output_dim: int) -> None:
    torch.manual_seed(1)
    head = create_head(name, D, **kwargs)
    with torch.no_grad():  # move away from the identity so the weights, not the init, are compared
        for parameter in head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    head.eval()
    x = _inputs()

    head.save(tmp_path / "head")
    loaded = load_head(tmp_path / "head")

    assert type(loaded) is type(head)
    assert loaded.get_config_dict() == head.get_config_dict()
    assert loaded.get_config_dict()["name"] == name
    assert torch.equal(loaded(x), head(x))
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["head.safetensors", "head_config.json"]


def test_config_dict_rebuilds_the_same_architecture() -> None:
    head = create_head("mlp", D, hidden_dim=64, output_dim=24, dropout=0.1)

    rebuilt = head_from_config_dict(head.get_config_dict())

    assert rebuilt.get_config_dict() == {
        "name": "mlp",
        "input_dim": D,
        "hidden_dim": 64,
        "output_dim": 24,
        "dropout": 0.1,
    }
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in head.state_dict().items()
    }


def test_defaults_are_resolved_into_the_saved_config() -> None:
    assert create_head("mlp", D).get_config_dict() == {
        "name": "mlp",
        "input_dim": D,
        "hidden_dim": 3 * D,
        "output_dim": D,
        "dropout": 0.0,
    }
    assert create_head("linear", D).get_config_dict() == {"name": "linear", "input_dim": D, "output_dim": D}


def test_unknown_head_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="valid: identity, skip, linear, mlp"):
        create_head("transformer", D)
    assert HEAD_NAMES == ("identity", "skip", "linear", "mlp")


def test_mlp_head_refuses_a_hidden_layer_too_narrow_for_the_identity() -> None:
    with pytest.raises(ValueError, match="hidden_dim >= 2 \\* input_dim"):
        create_head("mlp", D, hidden_dim=2 * D - 1)
