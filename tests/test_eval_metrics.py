import numpy as np
import pytest
import torch

from shflbw.eval.metrics import pearson, polarity_accuracy, spearman


def test_spearman_handles_ties_and_monotone_maps():
    a = [1.0, 2.0, 2.0, 3.0, 10.0]
    assert spearman(a, [v**3 for v in a]) == pytest.approx(1.0)
    assert spearman(a, [-v for v in a]) == pytest.approx(-1.0)
    # ties get average ranks: ranks of a are 0, 1.5, 1.5, 3, 4
    b = [0.0, 1.0, 2.0, 3.0, 4.0]
    expect = np.corrcoef([0, 1.5, 1.5, 3, 4], b)[0, 1]
    assert spearman(a, b) == pytest.approx(expect)


def test_pearson():
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 6.5])[0, 1])


def test_polarity_accuracy_separable_and_random():
    g = torch.Generator().manual_seed(0)
    labels = [i % 2 for i in range(200)]
    x = torch.randn(200, 8, generator=g)
    x[:, 0] += 4 * (torch.tensor(labels, dtype=torch.float32) * 2 - 1)
    acc, (lo, hi) = polarity_accuracy(torch.nn.functional.normalize(x, dim=1), labels)
    assert acc > 0.95 and lo <= acc <= hi
    noise = torch.randn(200, 8, generator=g)
    acc_noise, _ = polarity_accuracy(noise, labels)
    assert 0.3 < acc_noise < 0.7


def test_polarity_accuracy_split_mean_and_errors():
    g = torch.Generator().manual_seed(1)
    labels = [i % 2 for i in range(100)]
    x = torch.randn(100, 4, generator=g)
    x[:, 0] += 1.0 * (torch.tensor(labels, dtype=torch.float32) * 2 - 1)
    acc, _, mean = polarity_accuracy(x, labels, splits=4)
    accs = [polarity_accuracy(x, labels, seed=s)[0] for s in range(4)]
    assert mean == pytest.approx(np.mean(accs)) and acc == accs[0]
    with pytest.raises(ValueError, match="both classes"):
        polarity_accuracy(x, [1] * 100)


def test_calibration_batches_with_documents():
    import torch as _t

    from shflbw.eval.data import EvalData, calibration_batches

    def tokenizer(texts, padding, truncation, max_length, return_tensors):
        # a stand-in: one token per word, capped at max_length
        n = min(max_length, max(len(t.split()) for t in texts))
        return {"input_ids": _t.zeros(len(texts), n, dtype=_t.long), "max_length": _t.tensor(max_length)}

    docs = [" ".join(f"word{i}x{j}" for j in range(300)) + ". Another sentence here is long." for i in range(5)]
    data = EvalData([], [], [], [], [("cat", "dog", 1.0)], [], docs)
    plain = calibration_batches(tokenizer, data, sentences=4, words=0)
    with_docs = calibration_batches(tokenizer, data, sentences=4, words=0, documents=5)
    assert len(with_docs) == len(plain) + 1  # 5 documents: one batch of up to 16
    assert with_docs[-1]["input_ids"].shape == (5, 256)  # whole documents, cut at 256 tokens
    with pytest.raises(ValueError, match="documents"):
        calibration_batches(tokenizer, data, sentences=4, words=0, documents=6)


def test_calibration_seed_draws_other_text_from_the_same_pool():
    from shflbw.eval.data import EvalData, calibration_sentences, calibration_words

    def word(i, j):  # distinct letters-only words: "baa", "bab", ...
        n = 1000 + 40 * i + j
        return "".join(chr(97 + (n // 26 ** p) % 26) for p in (2, 1, 0))

    docs = [" ".join(word(i, j) for j in range(40)) + f". Sentence number {i} has five words." for i in range(30)]
    held = (word(0, 1), word(0, 2), word(3, 3))
    data = EvalData([], [], [], [], [(held[0], held[1], 1.0)], [(held[2], "dog", 0.5)], docs)
    pool_s = calibration_sentences(data, 60)
    pool_w = calibration_words(data, 1202)  # every usable word: 1,197 generated + 5 of the sentences
    assert calibration_sentences(data, 10) == pool_s[:10]  # seed 0: the first ones, as before seeds existed
    assert calibration_words(data, 50) == pool_w[:50]
    for seed in (1, 2):
        s, w = calibration_sentences(data, 10, seed=seed), calibration_words(data, 50, seed=seed)
        assert s == calibration_sentences(data, 10, seed=seed) and w == calibration_words(data, 50, seed=seed)
        assert s != pool_s[:10] and w != pool_w[:50]
        assert set(s) <= set(pool_s) and len(set(s)) == 10
        assert set(w) <= set(pool_w) and len(set(w)) == 50
    assert calibration_words(data, 50, seed=1) != calibration_words(data, 50, seed=2)
    assert not set(held) & set(pool_w)  # the held-out word-list words never appear
    with pytest.raises(ValueError, match="holds only 1202 usable words"):
        calibration_words(data, 1203, seed=1)


def test_data_dir_replaces_gensim(tmp_path, monkeypatch):
    # SHFLBW_DATA_DIR: the same sets read from copies of gensim's files; a missing file is named
    gensim_utils = pytest.importorskip("gensim.test.utils")
    import shutil

    from shflbw.eval.data import FILES, load_eval_data

    for name in FILES:
        shutil.copy(gensim_utils.datapath(name), tmp_path / name)
    want = load_eval_data()
    monkeypatch.setenv("SHFLBW_DATA_DIR", str(tmp_path))
    assert load_eval_data() == want
    (tmp_path / "simlex999.txt").unlink()
    with pytest.raises(SystemExit, match="simlex999.txt"):
        load_eval_data()
