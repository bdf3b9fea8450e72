"""A small CNN on scikit-learn's digits: 75 % Shfl-BW (V = 16) + fine-tuning stays accurate, beats 16 x 16 blocks.

Three seeds (the train / test split and the initialisation; 1400 train / 397 test images; c2 and c3
pruned, 8 fine-tuning epochs), measured in session 11 (torch 2.13 CPU, scikit-learn 1.9):

| seed | dense | Shfl-BW V = 16 | 16 x 16 blocks |
|---|---|---|---|
| 0 | 0.960 | 0.977 | 0.975 |
| 1 | 0.980 | 0.980 | 0.965 |
| 2 | 0.960 | 0.970 | 0.940 |

Means: Shfl-BW 0.9756, blocks 0.9597. One seed alone is a weak test: seed 0 separates the two by one
test image (until session 10 this test used seed 0 alone), and a fourth seed tied them (0.987 both).
So the test asserts on the mean over three seeds, with margins of several images.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shflbw
from shflbw.nn.masked import set_mask
from shflbw.prune import prune

sklearn = pytest.importorskip("sklearn.datasets")


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.c3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        h = F.relu(self.c3(h))
        return self.fc(h.mean(dim=(2, 3)))


def _data(seed: int):
    d = sklearn.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x, y, idx[:1400], idx[1400:]


def _train(model, x, y, train_idx, epochs, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for ep in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(ep))]
        for i in range(0, len(order), 64):
            b = order[i : i + 64]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def _accuracy(model, x, y, idx):
    return (model(x[idx]).argmax(1) == y[idx]).float().mean().item()


def _run(seed: int):
    """(dense, Shfl-BW, block) test accuracies and the fine-tuned Shfl-BW model for one seed."""
    x, y, tr, te = _data(seed)
    torch.manual_seed(seed)
    dense = CNN()
    _train(dense, x, y, tr, epochs=20, lr=3e-3)

    shfl = copy.deepcopy(dense)
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("c2", "c3"), exclude=(), time_budget=5)
    shflbw.sparsify_(shfl, cfg, progress=False)
    _train(shfl, x, y, tr, epochs=8, lr=1e-3)

    block = copy.deepcopy(dense)
    for mod in (block.c2, block.c3):
        r = prune(mod.weight.detach().flatten(1), 0.75, pattern="block", block_size=16)
        set_mask(mod, r.mask.reshape(mod.weight.shape), r.perm, 16)
    _train(block, x, y, tr, epochs=8, lr=1e-3)
    accs = tuple(_accuracy(m, x, y, te) for m in (dense, shfl, block))
    return accs, shfl, x[te]


def test_shflbw_cnn_on_digits():
    runs = [_run(seed) for seed in range(3)]
    accs = torch.tensor([a for a, _, _ in runs])  # [seed, (dense, shfl, block)]
    dense_acc, shfl_acc, block_acc = accs.mean(0).tolist()
    assert bool((accs[:, 0] > 0.95).all()), accs
    assert bool((accs[:, 1] > 0.95).all()), accs  # every seed stays accurate (lowest seen: 0.970)
    assert shfl_acc >= 0.97, accs  # mean 0.9756 when written
    # issue #6's bar: better than 16 x 16 block pruning with the same fine-tuning (means 0.9756
    # against 0.9597 when written: 19 test images over the three seeds; this asks for 6)
    assert shfl_acc >= block_acc + 0.005, accs

    # the compressed model (ShflBWConv2d through shflbw's op) predicts exactly as the masked one
    _, shfl, x_test = runs[0]
    shfl.eval()
    with torch.no_grad():
        masked_pred = shfl(x_test).argmax(1)
    shflbw.compress_(shfl)
    assert isinstance(shfl.c2, shflbw.ShflBWConv2d)
    with torch.no_grad():
        assert torch.equal(shfl(x_test).argmax(1), masked_pred)
