"""FGSM and the adversarial patch against oracles: the closed-form gradient of softmax regression,
an independent autograd FGSM, direct indexing; and the adversarial chapter's measured claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cvcourse import attacks


def _softmax_regression(d: int, k: int, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        model[1].bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    return model


def _closed_form_sign(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """d CE / d x = W^T (softmax(W x + b) - onehot(y)) for softmax regression (NumPy, by hand)."""
    w = model[1].weight.detach().numpy()  # (K, D)
    b = model[1].bias.detach().numpy()  # (K,)
    x = images.reshape(len(images), -1).numpy()  # (N, D)
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), labels.numpy()] -= 1.0
    return np.sign(p @ w).reshape(images.shape)  # the mean's 1/N does not change the sign


@pytest.fixture
def linear_case():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(6, 2, 3, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (6,), generator=g)
    return _softmax_regression(18, 4), images, labels


@pytest.mark.parametrize("epsilon", [0.0, 0.03, 0.3])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_closed_form_on_softmax_regression(linear_case, epsilon, targeted):
    model, images, labels = linear_case
    sign = _closed_form_sign(model, images, labels)
    want = np.clip(images.numpy() + (-1 if targeted else 1) * epsilon * sign, 0, 1)
    got = attacks.fgsm(model, images, labels, epsilon, targeted=targeted)
    assert type(got) is torch.Tensor and got.shape == images.shape and not got.requires_grad
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_fgsm_moves_loss_the_right_way(linear_case):
    model, images, labels = linear_case
    ce = nn.functional.cross_entropy
    up = attacks.fgsm(model, images, labels, 0.01)
    down = attacks.fgsm(model, images, labels, 0.01, targeted=True)
    assert ce(model(up), labels) > ce(model(images), labels) > ce(model(down), labels)


def _oracle_fgsm(model, images, labels, eps, targeted):
    """An independent, straightforward FGSM (its own autograd pass on a deep copy)."""
    import copy

    clone = copy.deepcopy(model).eval()
    x = images.clone().requires_grad_(True)
    nn.functional.cross_entropy(clone(x), labels).backward()
    step = x.grad.sign() * (-eps if targeted else eps)
    return (images + step).clamp(0, 1)


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    )


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_independent_autograd_and_leaves_model_as_found(targeted):
    model = _cnn()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
    model.train()  # a train-mode model with dropout and BatchNorm: the attack must not disturb it
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 8, 8, generator=g)
    labels = torch.randint(0, 5, (4,), generator=g)
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel):
        p.grad = s
    before_images = images.clone()
    before_stats = model[1].running_mean.clone()
    got = attacks.fgsm(model, images, labels, 0.05, targeted=targeted)
    want = _oracle_fgsm(model, before_images, labels, 0.05, targeted)
    torch.testing.assert_close(got, want)
    assert torch.equal(images, before_images), "fgsm modified its input"
    assert model.training and all(m.training for m in model.modules()), "mode not restored"
    assert all(p.grad is s for p, s in zip(model.parameters(), sentinel)), "parameters' .grad changed"
    assert all(torch.all(s == 7.0) for s in sentinel)
    assert torch.equal(model[1].running_mean, before_stats), "BatchNorm statistics changed"


@pytest.mark.parametrize("targeted", [False, True])
def test_iterative_fgsm_matches_loop_oracle(targeted):
    model = _cnn(2).eval()
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 8, 8, generator=g)
    labels = torch.randint(0, 5, (3,), generator=g)
    # one step of size epsilon is FGSM
    torch.testing.assert_close(
        attacks.iterative_fgsm(model, images, labels, 0.1, steps=1, step_size=0.1, targeted=targeted),
        _oracle_fgsm(model, images, labels, 0.1, targeted),
    )
    eps, alpha, x = 0.05, 0.03, images.clone()
    for _ in range(4):  # basic iterative method, written out
        x = _oracle_fgsm(model, x, labels, alpha, targeted)
        x = torch.max(torch.min(x, images + eps), images - eps).clamp(0, 1)
    got = attacks.iterative_fgsm(model, images, labels, eps, steps=4, step_size=alpha, targeted=targeted)
    torch.testing.assert_close(got, x)
    assert (got - images).abs().max() <= eps + 1e-6
    with pytest.raises(ValueError):
        attacks.iterative_fgsm(model, images, labels, 0.1, steps=0)


def test_fgsm_int_labels_and_errors(linear_case):
    model, images, _ = linear_case
    labels = torch.full((6,), 2)
    torch.testing.assert_close(attacks.fgsm(model, images, 2, 0.1), attacks.fgsm(model, images, labels, 0.1))
    with pytest.raises(ValueError, match="epsilon"):
        attacks.fgsm(model, images, labels, -0.1)
    with pytest.raises(ValueError, match="batch"):
        attacks.fgsm(model, images[0], labels, 0.1)


def test_accuracy_under_attack_and_curve_match_per_epsilon_oracle():
    model = _cnn(1).eval()
    g = torch.Generator().manual_seed(5)
    images = torch.rand(40, 3, 8, 8, generator=g)
    with torch.no_grad():
        labels = model(images).argmax(1)  # all correct when clean
    epsilons = [0.0, 0.01, 0.05, 0.2]
    curve = attacks.epsilon_curve(model, images, labels, epsilons, batch_size=16)
    for eps, acc, flip in zip(epsilons, curve.accuracy, curve.flip_rate):
        adversarial = _oracle_fgsm(model, images, labels, eps, False)
        with torch.no_grad():
            ok = model(adversarial).argmax(1) == labels
        assert acc == pytest.approx(ok.float().mean().item())
        assert flip == pytest.approx(1 - ok.float().mean().item())  # all were correct
        assert attacks.accuracy_under_attack(model, images, labels, eps) == pytest.approx(acc)
    assert type(attacks.accuracy_under_attack(model, images, labels, 0.1)) is float
    assert curve.accuracy[0] == 1.0
    with pytest.raises(ValueError, match="increasing"):
        attacks.epsilon_curve(model, images, labels, [0.1, 0.05])


def test_smallest_flipping_epsilon():
    curve = attacks.EpsilonCurve([0.0, 0.1, 0.2, 0.3], [1.0, 0.8, 0.45, 0.1], [0.0, 0.2, 0.55, 0.9])
    assert attacks.smallest_flipping_epsilon(curve) == 0.2
    assert attacks.smallest_flipping_epsilon(curve, 0.8) == 0.3
    assert curve.is_monotone()
    assert not attacks.EpsilonCurve([0, 1], [0.5, 0.6], [0, 0]).is_monotone()
    with pytest.raises(ValueError, match="extend the grid"):
        attacks.smallest_flipping_epsilon(curve, 0.95)


def test_normalized_wrapper():
    inner = nn.Identity()
    wrapped = attacks.Normalized(inner)
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor(attacks.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(attacks.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(wrapped(x), (x - mean) / std)


def test_apply_patch_matches_indexing_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 10, 12, generator=g)
    positions = attacks.random_positions(5, (10, 12), 4, g)
    assert positions.shape == (5, 2)
    assert (positions[:, 0] <= 6).all() and (positions[:, 1] <= 8).all() and (positions >= 0).all()
    patch = torch.rand(3, 4, 4, generator=g, requires_grad=True)
    out = attacks.apply_patch(images, patch, positions)
    for i, (r, c) in enumerate(positions.tolist()):
        want = images[i].clone()
        want[:, r : r + 4, c : c + 4] = patch.detach()
        assert torch.equal(out[i].detach(), want)
    out.sum().backward()
    assert torch.equal(patch.grad, torch.full_like(patch, 5.0))
    with pytest.raises(ValueError, match="does not fit"):
        attacks.random_positions(1, (3, 3), 4, g)


def test_train_patch_on_toy_model_and_success_rate():
    # A model whose class 1 logit is the mean brightness: a white patch is the obvious optimum.
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[0.0], [200.0]]))
        model[2].bias.copy_(torch.tensor([0.0, -8.0]))  # class 1 needs mean > 0.04
    images = torch.zeros(20, 1, 10, 10)
    labels = torch.zeros(20, dtype=torch.long)
    result = attacks.train_patch(model, images, target=1, patch_size=3, steps=40, batch_size=8, lr=0.1)
    assert result.patch.shape == (1, 3, 3) and 0 <= result.patch.min() and result.patch.max() <= 1
    assert result.patch.mean() > 0.9
    assert result.loss[-1] < result.loss[0]
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    # success: patched mean = 9 * v / 100 > 0.04 with v ~ 1
    assert attacks.patch_success_rate(model, images, labels, result.patch, 1) == 1.0
    assert attacks.patch_success_rate(model, images, labels, torch.zeros(1, 3, 3), 1) == 0.0
    # images whose true class is the target are left out of the rate
    mixed = torch.cat([torch.ones(10, 1, 10, 10), torch.zeros(10, 1, 10, 10)])
    mixed_labels = torch.cat([torch.ones(10, dtype=torch.long), torch.zeros(10, dtype=torch.long)])
    assert attacks.patch_success_rate(model, mixed, mixed_labels, torch.zeros(1, 3, 3), 1) == 0.0


# --------------------------------------------------------------------------- the chapter's claims


@pytest.fixture(scope="module")
def digits():
    return attacks.digits_setup()


@pytest.fixture(scope="module")
def shapes():
    return attacks.shapes_setup()


def test_chapter_digits_curve_falls_monotonically(digits):
    assert digits.clean_accuracy > 0.9
    curve = attacks.epsilon_curve(digits.model, digits.test_images, digits.test_labels, attacks.DIGITS_EPSILONS)
    assert curve.is_monotone(), curve.accuracy
    assert curve.accuracy[0] == pytest.approx(digits.clean_accuracy)
    assert curve.accuracy[-1] < 0.2
    eps = attacks.smallest_flipping_epsilon(curve)
    assert 0 < eps <= 0.1


def test_chapter_patch_success_on_held_out_images(shapes):
    assert shapes.clean_accuracy > 0.9
    result = attacks.train_patch(shapes.model, shapes.train_images, **attacks.SHAPES_PATCH)
    target = attacks.SHAPES_PATCH["target"]
    rate = attacks.patch_success_rate(shapes.model, shapes.test_images, shapes.test_labels, result.patch, target)
    assert rate >= 0.7, rate
    # a random patch of the same size is no such lever
    noise = torch.rand(result.patch.shape, generator=torch.Generator().manual_seed(0))
    control = attacks.patch_success_rate(shapes.model, shapes.test_images, shapes.test_labels, noise, target)
    assert control < 0.1, control


def test_chapter_coffee_demo():
    pytest.importorskip("cvcourse.models")
    try:
        demo = attacks.coffee_demo()
    except FileNotFoundError as exc:  # weights not placed by `make setup`
        pytest.skip(str(exc))
    assert demo.clean_class == "espresso" and demo.clean_prob > 0.9
    # every untargeted budget, from half a grey level, changes the top-1 class
    assert demo.untargeted[0][0] == 0.5
    assert all(name != "espresso" for _, name, _ in demo.untargeted)
    # larger budgets make the wrong answer more confident
    probs = [p for _, _, p in demo.untargeted]
    assert probs == sorted(probs), probs
    assert demo.target_class == "goldfish" and demo.target_levels == 2.0 and demo.steps == 10
    assert demo.targeted_one_step[0] != "goldfish"
    assert demo.targeted_iterative[0] == "goldfish" and demo.targeted_iterative[1] > 0.9
    from cvcourse import data

    clean = data.load_photo("coffee")[None]  # the adversarial image stays within 2/255 of the photo
    assert (demo.targeted_image - clean).abs().max() <= 2 / 255 + 1e-6
