"""Head registry and the head protocol, checked on every registered head."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from scipy.stats import spearmanr

from benchmark.heads import HeadHparamError, UnknownHeadError, get_head, head_hparams, list_heads

REQUIRED = {"mse", "l1", "dor", "dor-seed", "coral", "corn", "sord", "emd"}
BOUNDED = {"dor", "coral", "corn", "sord", "emd"}  # expectations over [0, 1]; mse, l1 and dor-seed are raw scores
MASKED = {"corn", "dor-seed"}  # their losses index samples with boolean masks, which the meta device cannot run


def small(name: str, num_bins: int) -> dict[str, int]:
    """Hyper-parameters for a small instance of a registered head (fewer bins where it has bins)."""
    return {"num_bins": num_bins} if "num_bins" in head_hparams(name) else {}


def test_registry_names_and_classes() -> None:
    assert REQUIRED <= set(list_heads())
    assert list_heads() == sorted(list_heads())
    for name in list_heads():
        assert type(get_head(name, 8)).name == name
    assert head_hparams("dor") == {"num_bins": 28, "soft_targets": False}
    assert head_hparams("mse") == {}


def test_unknown_head_lists_the_known_names() -> None:
    with pytest.raises(UnknownHeadError) as info:
        get_head("ordinal", 8)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'ordinal'" in message and all(name in message for name in REQUIRED)


def test_bad_hparam_names_head_key_and_accepted_keys() -> None:
    with pytest.raises(HeadHparamError) as info:
        get_head("sord", 8, alpha=2.0, sigma=1.0)
    message = str(info.value)
    assert "'sord'" in message and "'sigma'" in message and "num_bins, alpha" in message
    assert isinstance(info.value, TypeError)


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="'mse': in_features must be a positive integer, got 0"):
        get_head("mse", 0)
    with pytest.raises(ValueError, match="'num_bins' must be >= 2, got 1"):
        get_head("dor", 8, num_bins=1)
    with pytest.raises(ValueError, match="'alpha' must be > 0.0, got -1"):
        get_head("sord", 8, alpha=-1)


def test_declarations_must_match_the_constructor(monkeypatch) -> None:
    from torch import nn

    from baselines.registry import HPARAMS, HParam, register_head

    class Huber(nn.Module):
        name = "huber-test"

        def __init__(self, in_features: int, delta: float = 1.0) -> None:
            super().__init__()

        forward = loss = predict = init_prior = lambda self, *args: None

    with pytest.raises(TypeError, match="is not declared: add its hyper-parameters to HPARAMS"):
        register_head()(Huber)
    monkeypatch.setitem(HPARAMS, Huber.name, {"delta": HParam(float, 2.0)})
    with pytest.raises(TypeError, match="declared hyper-parameters"):
        register_head()(Huber)
    monkeypatch.setitem(HPARAMS, Huber.name, {})
    with pytest.raises(TypeError, match="declared hyper-parameters"):
        register_head()(Huber)


@pytest.mark.parametrize("name", list_heads())
def test_protocol_shapes_ranges_and_bf16_autocast(name: str) -> None:
    torch.manual_seed(0)
    head = get_head(name, 8, **small(name, 6))
    x, u = torch.randn(5, 8) * 3, torch.tensor([0.1, 0.3, 0.5, 0.8, 1.0])
    outputs = head(x)
    pred = head.predict(outputs)
    assert pred.shape == (5,) and torch.isfinite(pred).all()
    if name in BOUNDED:
        assert ((pred >= 0) & (pred <= 1)).all()
    loss = head.loss(outputs, u)
    assert loss.shape == () and torch.isfinite(loss)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        outputs_bf16 = head(x)
        loss_bf16 = head.loss(outputs_bf16, u)
        pred_bf16 = head.predict(outputs_bf16)
    assert loss_bf16.dtype == torch.float32 and pred_bf16.dtype == torch.float32
    assert loss_bf16.item() == pytest.approx(head.loss(outputs_bf16.float(), u).item(), rel=1e-6)


@pytest.mark.parametrize("name", list_heads())
def test_init_prior_starts_every_head_at_the_training_location(name: str) -> None:
    torch.manual_seed(0)
    u_train = torch.distributions.Beta(torch.tensor(5.0), torch.tensor(2.0)).sample((4000,))  # skewed high
    location = torch.quantile(u_train, 0.5) if name == "l1" else u_train.mean()
    head = get_head(name, 8)
    head.init_prior(u_train)
    pred = head.predict(head(torch.randn(6, 8) * 5))  # weights are zeroed: any input gets the prior
    assert torch.allclose(pred, pred[0].expand(6))
    assert pred[0].item() == pytest.approx(location.item(), abs=0.03)


@pytest.mark.parametrize("name", list_heads())
def test_gradcheck_loss_wrt_outputs(name: str) -> None:
    torch.manual_seed(0)
    head = get_head(name, 4, **small(name, 5)).double()
    outputs = head(torch.randn(3, 4, dtype=torch.float64)).detach().requires_grad_(True)
    u = torch.tensor([0.35, 0.62, 0.9], dtype=torch.float64)  # no class-0 sample: the seed head would drop it
    assert torch.autograd.gradcheck(lambda out: head.loss(out, u), (outputs,))


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.skip(reason="boolean-mask indexing"))
                                  if name in MASKED else name for name in list_heads()])
def test_no_hard_coded_device(name: str) -> None:
    head = get_head(name, 8).to("meta")
    outputs = head(torch.zeros(4, 8, device="meta"))
    assert head.loss(outputs, torch.zeros(4, device="meta")).device.type == "meta"
    assert head.predict(outputs).device.type == "meta"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and the test machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_briefly(name: str, prior: bool = False, **hparams: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit head ``name`` on u = sigmoid(X w) with 200 full-batch Adam steps; return held-out (pred, u)."""
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    u = torch.sigmoid(x @ (torch.randn(16) / 2))
    train, test = slice(0, 384), slice(384, 512)
    head = get_head(name, 16, **hparams)
    if prior:
        head.init_prior(u[train])
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        head.loss(head(x[train]), u[train]).backward()
        optimiser.step()
    with torch.no_grad():
        return head.predict(head(x[test])), u[test]


@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("name", list_heads())
def test_every_head_learns_a_monotone_score(name: str, prior: bool, one_thread: None) -> None:
    # coral_pytorch's corn_loss loops over the K-1 tasks in Python: fewer bins keep this test quick
    pred, u = train_briefly(name, prior, **({"num_bins": 10} if name == "corn" else {}))
    assert spearmanr(pred.numpy(), u.numpy()).statistic > 0.95


def test_trained_seed_head_shows_the_half_bin_bias_and_dor_does_not(one_thread: None) -> None:
    pred, u = train_briefly("dor")
    assert abs((pred - u).mean().item()) < 0.005
    pred, u = train_briefly("dor-seed")
    assert (pred - u).mean().item() == pytest.approx(0.5 / 27, abs=0.005)
