"""cvcourse.train: the loop against a hand-written Adam step, determinism, predict and accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_blobs
from sklearn.metrics import accuracy_score
from torch import nn

from cvcourse import train


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blobs(n=300, seed=0):
    x, y = make_blobs(n_samples=n, centers=3, n_features=4, random_state=seed, cluster_std=1.0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def test_default_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train.default_device() == torch.device(expected)


def test_one_full_batch_epoch_equals_one_adam_step():
    x, y = _blobs()
    model = nn.Linear(4, 3)
    reference = nn.Linear(4, 3)
    reference.load_state_dict(model.state_dict())
    history = train.fit(model, x, y, epochs=1, lr=0.01, batch_size=len(x), device="cpu", weight_decay=0.1)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=0.1)
    logits = reference(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(model.weight, reference.weight)
    torch.testing.assert_close(model.bias, reference.bias)
    assert history.loss == [pytest.approx(loss.item(), rel=1e-6)]
    assert history.accuracy == [pytest.approx((logits.argmax(1) == y).float().mean().item())]


def test_fit_learns_and_records_history(one_thread):
    x, y = _blobs()
    model = _model()
    history = train.fit(model, x, y, epochs=20, lr=1e-2, batch_size=32, device="cpu",
                        val_images=x[:50], val_labels=y[:50])
    assert len(history.loss) == len(history.accuracy) == len(history.val_accuracy) == 20
    assert history.loss[-1] < history.loss[0]
    assert history.accuracy[-1] > 0.95
    assert not model.training  # left in eval mode


def test_fit_is_deterministic_for_a_seed_and_keeps_global_rng(one_thread):
    x, y = _blobs()
    state = torch.random.get_rng_state()
    a, b, c = _model(), _model(), _model()
    ha = train.fit(a, x, y, epochs=3, batch_size=32, seed=7, device="cpu")
    hb = train.fit(b, x, y, epochs=3, batch_size=32, seed=7, device="cpu")
    hc = train.fit(c, x, y, epochs=3, batch_size=32, seed=8, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert ha.loss == hb.loss
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert ha.loss != hc.loss


def test_fit_rejects_mismatched_lengths():
    x, y = _blobs()
    with pytest.raises(ValueError, match="differ in length"):
        train.fit(nn.Linear(4, 3), x, y[:-1])


def test_predict_and_accuracy_against_eval_forward_and_sklearn():
    x, y = _blobs()
    model = _model()
    model.train()
    logits = train.predict(model, x, batch_size=64)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(logits, expected)
    assert logits.device.type == "cpu"
    acc = train.accuracy(model, x, y, batch_size=7)
    assert isinstance(acc, float)
    assert acc == pytest.approx(accuracy_score(y.numpy(), expected.argmax(1).numpy()))
