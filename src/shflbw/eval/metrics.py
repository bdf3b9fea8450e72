"""Embedding metrics: Lee Pearson, polarity accuracy (5-fold logistic regression), word similarity Spearman."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shflbw.eval.data import EvalData


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 256) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (the all-MiniLM-L6-v2 recipe)."""
    device = next(model.parameters(), next(model.buffers())).device
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1).cpu())
    return torch.cat(out)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # average ranks of ties
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a, b) -> float:
    return pearson(_ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64)))


def _logreg_fit(x: torch.Tensor, y: torch.Tensor, steps: int = 100) -> torch.Tensor:
    # L2 of 0.5 / n on the mean loss: scikit-learn's LogisticRegression(C=1) objective.
    l2 = 0.5 / len(y)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def polarity_accuracy(emb: torch.Tensor, labels: list[int], folds: int = 5, seed: int = 0, boot: int = 1000):
    """5-fold cross-validated accuracy of logistic regression, with a 95 % bootstrap interval."""
    x = emb.double()
    y = torch.tensor(labels, dtype=torch.float64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    correct = torch.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = torch.tensor(sorted(set(order.tolist()) - set(test.tolist())))
        w = _logreg_fit(x[train], y[train])
        pred = (torch.cat([x[test], torch.ones(len(test), 1, dtype=x.dtype)], 1) @ w) > 0
        correct[test] = (pred.double() == y[test]).float()
    rng = np.random.default_rng(seed)
    c = correct.numpy()
    samples = [c[rng.integers(0, len(c), len(c))].mean() for _ in range(boot)]
    return float(c.mean()), (float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5)))


def evaluate(model, tokenizer, data: EvalData, reference: torch.Tensor | None = None) -> dict:
    """All metrics of one model; ``reference`` (dense Lee embeddings) adds the cosine to dense."""
    lee = embed(model, tokenizer, data.lee_docs)
    sims = (lee @ lee.t()).numpy()
    lee_r = pearson([sims[i, j] for i, j, _ in data.lee_sims], [s for _, _, s in data.lee_sims])
    acc, ci = polarity_accuracy(embed(model, tokenizer, data.polarity_text), data.polarity_label)
    words = sorted({w for a, b, _ in data.wordsim + data.simlex for w in (a, b)})
    wemb = dict(zip(words, embed(model, tokenizer, words, batch_size=256, max_length=16)))
    ws = spearman([float(wemb[a] @ wemb[b]) for a, b, _ in data.wordsim], [s for _, _, s in data.wordsim])
    sl = spearman([float(wemb[a] @ wemb[b]) for a, b, _ in data.simlex], [s for _, _, s in data.simlex])
    out = {"lee_pearson": lee_r, "polarity": acc, "polarity_ci95": ci, "wordsim353": ws, "simlex999": sl,
           "lee_embeddings": lee}
    if reference is not None:
        out["cosine_to_dense"] = float((lee * reference).sum(1).mean())
    return out
