"""The offline evaluation sets (all inside the gensim wheel, read with gensim.test.utils.datapath).

``SHFLBW_DATA_DIR`` names a directory holding copies of the same files instead (FILES), for a
machine without gensim, e.g. a GPU machine without network that the study is carried to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# gensim's test-data files the evaluation reads
FILES = ("lee.cor", "similarities0-1.txt", "pang_lee_polarity.cor", "lee_background.cor", "wordsim353.tsv",
         "simlex999.txt")


def _path(name: str) -> str:
    folder = os.environ.get("SHFLBW_DATA_DIR")
    if folder:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise SystemExit(f"SHFLBW_DATA_DIR={folder!r} has no {name!r} (it needs {', '.join(FILES)})")
        return path
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise SystemExit("the demo needs gensim's test data: pip install 'shflbw[demo]' "
                         "(or SHFLBW_DATA_DIR, a directory with copies of its files)") from None
    return datapath(name)


def _lines(name: str) -> list[str]:
    with open(_path(name), encoding="latin-1") as f:
        return [line.rstrip("\n") for line in f]


@dataclass(frozen=True)
class EvalData:
    lee_docs: list[str]  # 50 news documents
    lee_sims: list[tuple[int, int, float]]  # (i, j, human similarity), i < j
    polarity_text: list[str]  # 200 sentences
    polarity_label: list[int]  # 1 = positive
    wordsim: list[tuple[str, str, float]]
    simlex: list[tuple[str, str, float]]
    calibration: list[str]  # lee_background: disjoint from every evaluation text


def _word_pairs(name: str) -> list[tuple[str, str, float]]:
    out = []
    for line in _lines(name):
        if line.startswith("#") or not line.strip():
            continue
        a, b, score = line.split("\t")[:3]
        out.append((a.lower(), b.lower(), float(score)))
    return out


def load_eval_data() -> EvalData:
    docs = [d for d in _lines("lee.cor") if d.strip()]
    sims = []
    for i, row in enumerate(_lines("similarities0-1.txt")):
        values = row.split()
        for j in range(i + 1, len(values)):
            sims.append((i, j, float(values[j])))
    text, label = [], []
    for line in _lines("pang_lee_polarity.cor"):
        tag, _, sentence = line.partition(" ")
        text.append(sentence.strip())
        label.append(1 if tag == "__label__pos" else 0)
    background = [d for d in _lines("lee_background.cor") if d.strip()]
    return EvalData(docs, sims, text, label, _word_pairs("wordsim353.tsv"), _word_pairs("simlex999.txt"), background)


def _pick(items: list, n: int, seed: int) -> list:
    """The first ``n`` items (seed 0, the study's default), or ``n`` drawn without replacement by
    ``seed`` (repeat runs on other calibration text from the same pool)."""
    if seed == 0:
        return items[:n]
    import random

    return random.Random(seed).sample(items, n)


def calibration_sentences(data: EvalData, n: int = 512, min_words: int = 4, seed: int = 0) -> list[str]:
    """``n`` sentences of lee_background (disjoint from the Lee, polarity and word sets): the first
    ones, or a sample drawn by ``seed``."""
    out = background_sentences(data, min_words)
    if len(out) < n:
        raise ValueError(f"lee_background holds only {len(out)} sentences of >= {min_words} words, asked for {n}")
    return _pick(out, n, seed)


def calibration_words(data: EvalData, n: int = 512, seed: int = 0) -> list[str]:
    """``n`` distinct words (3+ letters) of lee_background that appear in neither WordSim-353 nor
    SimLex-999: the first ones in reading order, or a sample of all of them drawn by ``seed``."""
    import re

    held_out = {w for a, b, _ in data.wordsim + data.simlex for w in (a, b)}
    out: list[str] = []
    seen: set[str] = set()
    for doc in data.calibration:
        for w in re.findall(r"[a-z]+", doc.lower()):
            if len(w) > 2 and w not in held_out and w not in seen:
                seen.add(w)
                out.append(w)
                if len(out) == n and seed == 0:
                    return out
    if len(out) < n:
        raise ValueError(f"lee_background holds only {len(out)} usable words, asked for {n}")
    return _pick(out, n, seed)


def background_sentences(data: EvalData, min_words: int = 4) -> list[str]:
    """Every sentence of lee_background with at least ``min_words`` words (2,617 in gensim 4.4)."""
    import re

    return [s.strip() for doc in data.calibration for s in re.split(r"(?<=[.!?])\s+", doc) if len(s.split()) >= min_words]


def text_batches(tokenizer, texts: list[str], size: int, max_length: int) -> list[dict]:
    """Tokenised batches (dicts of tensors) of ``size`` texts each."""
    return [dict(tokenizer(texts[i : i + size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
            for i in range(0, len(texts), size)]


def calibration_batches(tokenizer, data: EvalData, sentences: int = 512, words: int = 512,
                        documents: int = 0, seed: int = 0) -> list[dict]:
    """One-shot calibration: ``sentences`` lee_background sentences (batches of 64), ``words`` single
    words, and ``documents`` whole lee_background documents (batches of 16, up to 256 tokens, the
    length the Lee documents are embedded at). ``seed`` 0 takes the first of each; another seed
    draws them from all of lee_background (the study's repeat runs)."""
    out = text_batches(tokenizer, calibration_sentences(data, sentences, seed=seed), 64, 128)
    if words:
        out += text_batches(tokenizer, calibration_words(data, words, seed=seed), 128, 16)
    if documents:
        if documents > len(data.calibration):
            raise ValueError(f"lee_background holds {len(data.calibration)} documents, asked for {documents}")
        out += text_batches(tokenizer, _pick(data.calibration, documents, seed), 16, 256)
    return out


def distillation_batches(tokenizer, data: EvalData, words: int = 6000) -> list[dict]:
    """All lee_background sentences (batches of 32) alternating with batches of 128 single words."""
    sb = text_batches(tokenizer, background_sentences(data), 32, 128)
    wb = text_batches(tokenizer, calibration_words(data, words), 128, 16)
    return [b for pair in zip(sb, wb * (len(sb) // len(wb) + 1)) for b in pair]
