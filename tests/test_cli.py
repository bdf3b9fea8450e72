import subprocess
import sys

import pytest

from shflbw.cli import main


def test_env_reports_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch:" in out and "shflbw:" in out and "gpu:" in out


def test_example_runs_end_to_end(tmp_path, capsys):
    assert main(["example", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("OK")
    assert (tmp_path / "layer.safetensors").exists()


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "shflbw", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "env" in r.stdout


def test_bench_without_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["bench"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["bench", "conv", "--models", "resnet50"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["bench", "--suite", "decode"]) == 2  # a leading option goes to the linear benchmark
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("args,msg", [(["--sparsity", "abc"], "comma-separated numbers"),
                                      (["--sparsity", "0.5,1.5"], r"in \(0, 1\), got 1.5"),
                                      (["--vector", "24"], "multiple of 16")])
def test_demo_bad_arguments_are_named_before_any_work(args, msg):
    with pytest.raises(SystemExit, match=msg):
        main(["demo", *args])


def test_bench_unknown_kind():
    assert main(["bench", "attention"]) == 2


def test_prune_checkpoint_round_trip(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import torch

    from shflbw.prune_checkpoint import load_pruned

    cfg = transformers.BertConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                  num_attention_heads=2)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "hf")
    (tmp_path / "cfg.json").write_text('{"sparsity": 0.5, "vector": 32, "include": ["encoder.*"], "exclude": []}')
    assert main(["prune", str(tmp_path / "hf"), "--config", str(tmp_path / "cfg.json"), "-o", str(tmp_path / "out")]) == 0
    assert "pruned 6 layers" in capsys.readouterr().out
    model = load_pruned(str(tmp_path / "out"))
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).last_hidden_state).all()


def test_prune_checkpoint_bad_inputs(tmp_path):
    with pytest.raises(SystemExit, match="not a Hugging Face model directory"):
        main(["prune", str(tmp_path), "-o", str(tmp_path / "o")])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="-o: .*not a shflbw model directory"):  # before any pruning
        main(["prune", str(tmp_path), "-o", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


WORDS = "the a cat dog sat on mat ran fast slow red blue big small house tree bird sang loud quiet".split()


def _tiny_bert_with_tokenizer(path, transformers, tokenizer=True):
    import torch

    cfg = transformers.BertConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                  num_attention_heads=2)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    if tokenizer:  # a word-level tokenizer over WORDS (transformers 5 ignores BertTokenizer's vocab_file)
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]"] + WORDS)}
        tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tk.pre_tokenizer = pre_tokenizers.Whitespace()
        transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)


def _texts(path, n, seed):
    import random

    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)) + "\n\n")
    return path


def test_prune_checkpoint_oneshot_recipe_beats_magnitude(tmp_path, capsys):
    # --recipe oneshot (OBS masks, refit of weights and biases, per-layer allocation) keeps the pruned
    # model closer to the dense one than magnitude masks at the same overall sparsity, on other text.
    import json


    transformers = pytest.importorskip("transformers")
    import torch

    from shflbw.prune_checkpoint import load_pruned, read_calibration

    hf = tmp_path / "hf"
    _tiny_bert_with_tokenizer(hf, transformers)
    (tmp_path / "cfg.json").write_text('{"sparsity": 0.5, "vector": 32, "include": ["encoder.*"], "exclude": []}')
    calib = _texts(tmp_path / "calib.txt", 64, seed=0)
    base = ["prune", str(hf), "--config", str(tmp_path / "cfg.json"), "--device", "cpu"]
    assert main(base + ["-o", str(tmp_path / "mag")]) == 0
    assert main(base + ["-o", str(tmp_path / "one"), "--recipe", "oneshot", "--calibration", str(calib)]) == 0
    assert "pruned 6 layers (oneshot" in capsys.readouterr().out
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert (report["recipe"], report["fit_bias"], report["allocate"]) == ("oneshot", True, True)
    sizes = {n: r["shape"][0] * r["shape"][1] for n, r in report["layers"].items()}
    overall = sum(r["sparsity"] * sizes[n] for n, r in report["layers"].items()) / sum(sizes.values())
    assert 0.5 - 1e-6 <= overall <= 0.5 + 1 / 16 + 0.02  # the budget is kept (one step of overshoot at most)
    # kept importance is of the trained weights, not of the refit ones (which are zero where pruned)
    assert all(0.3 < r["kept_importance"] < 0.99 for r in report["layers"].values())

    dense = transformers.AutoModel.from_pretrained(hf).eval()
    held_out = read_calibration(str(_texts(tmp_path / "eval.txt", 32, seed=1)), transformers.AutoTokenizer.from_pretrained(hf))

    def error(model):
        num = den = 0.0
        with torch.no_grad():
            for b in held_out:
                ref = dense(**b).last_hidden_state
                num += (model(**b).last_hidden_state - ref).pow(2).sum().item()
                den += ref.pow(2).sum().item()
        return (num / den) ** 0.5

    e_mag, e_one = error(load_pruned(str(tmp_path / "mag"))), error(load_pruned(str(tmp_path / "one")))
    assert e_one < 0.7 * e_mag, (e_one, e_mag)


def test_prune_checkpoint_activation_importance_reads_calibration(tmp_path, capsys):
    import json


    transformers = pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    _tiny_bert_with_tokenizer(hf, transformers)
    (tmp_path / "cfg.json").write_text('{"sparsity": 0.75, "vector": 32, "importance": "activation"}')
    cmd = ["prune", str(hf), "--config", str(tmp_path / "cfg.json"), "-o", str(tmp_path / "o"), "--device", "cpu"]
    with pytest.raises(SystemExit, match='importance="activation".*--calibration'):
        main(cmd)
    assert main(cmd + ["--calibration", str(_texts(tmp_path / "c.txt", 16, seed=0)), "--batch-size", "4"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["recipe"] == "sparsify" and report["layers"]


def test_prune_checkpoint_calibration_errors(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf, bare = tmp_path / "hf", tmp_path / "bare"
    _tiny_bert_with_tokenizer(hf, transformers)
    _tiny_bert_with_tokenizer(bare, transformers, tokenizer=False)
    out = ["-o", str(tmp_path / "o"), "--device", "cpu"]
    with pytest.raises(SystemExit, match="--recipe oneshot needs calibration text"):
        main(["prune", str(hf), "--recipe", "oneshot"] + out)
    with pytest.raises(SystemExit, match="--recipe distill needs calibration text"):
        main(["prune", str(hf), "--recipe", "distill"] + out)
    with pytest.raises(SystemExit, match="not found"):
        main(["prune", str(hf), "--recipe", "oneshot", "--calibration", str(tmp_path / "missing.txt")] + out)
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(SystemExit, match="has no text"):
        main(["prune", str(hf), "--recipe", "oneshot", "--calibration", str(tmp_path / "blank.txt")] + out)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SystemExit, match="not UTF-8"):
        main(["prune", str(hf), "--recipe", "oneshot", "--calibration", str(tmp_path / "bin.txt")] + out)
    with pytest.raises(SystemExit, match="no tokenizer"):
        main(["prune", str(bare), "--recipe", "oneshot", "--calibration", str(_texts(tmp_path / "c.txt", 8, 0))] + out)
    (tmp_path / "foreign.txt").write_text("zebra quokka\nnarwhal\n")
    with pytest.raises(SystemExit, match="every token .* is unknown"):
        main(["prune", str(hf), "--recipe", "oneshot", "--calibration", str(tmp_path / "foreign.txt")] + out)
    with pytest.raises(SystemExit):  # argparse: not a recipe
        main(["prune", str(hf), "--recipe", "gradual"] + out)
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_prune_checkpoint_decoder_tokenizer_without_pad(tmp_path, capsys):
    # Decoder tokenizers often have an end-of-text token and no padding token: the calibration
    # batches pad with the former (the attention mask hides it) instead of failing.

    transformers = pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    hf = tmp_path / "llama"
    transformers.LlamaModel(cfg).save_pretrained(hf)
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<eos>", "<unk>"] + WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>").save_pretrained(hf)
    (tmp_path / "cfg.json").write_text('{"sparsity": 0.5, "vector": 32, "include": ["layers.*"], "exclude": []}')
    assert main(["prune", str(hf), "--config", str(tmp_path / "cfg.json"), "-o", str(tmp_path / "o"), "--device", "cpu",
                 "--recipe", "oneshot", "--calibration", str(_texts(tmp_path / "c.txt", 16, seed=0))]) == 0
    assert "pruned 7 layers (oneshot" in capsys.readouterr().out


def test_prune_checkpoint_stopped_while_writing_keeps_the_previous_output(tmp_path, monkeypatch):
    # The Hugging Face config and the report are written with the weights into a temporary
    # directory: a run stopped while writing them leaves OUT as it was.
    import os


    transformers = pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    _tiny_bert_with_tokenizer(hf, transformers)
    cmd = ["prune", str(hf), "-o", str(tmp_path / "out"), "--device", "cpu"]
    assert main(cmd) == 0
    before = {f: (tmp_path / "out" / f).read_bytes() for f in os.listdir(tmp_path / "out")}
    assert {"config.json", "report.json", "model.safetensors"} <= set(before)

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PretrainedConfig, "save_pretrained", stopped)
    with pytest.raises(KeyboardInterrupt):
        main(cmd)
    assert {f: (tmp_path / "out" / f).read_bytes() for f in os.listdir(tmp_path / "out")} == before
    assert sorted(os.listdir(tmp_path)) == ["hf", "out"]


def test_prune_checkpoint_distill_recipe(tmp_path, capsys, monkeypatch):
    # --recipe distill: a plain one-shot start, then distillation toward the dense model on the
    # calibration text with the masks fixed; the saved model keeps the config's sparsity exactly.
    import json


    transformers = pytest.importorskip("transformers")
    import torch

    import shflbw.recover
    from shflbw.prune_checkpoint import load_pruned

    hf = tmp_path / "hf"
    _tiny_bert_with_tokenizer(hf, transformers)
    (tmp_path / "cfg.json").write_text('{"sparsity": 0.5, "vector": 32, "include": ["encoder.*"], "exclude": []}')
    calib = _texts(tmp_path / "calib.txt", 64, seed=0)
    base = ["prune", str(hf), "--config", str(tmp_path / "cfg.json"), "--device", "cpu", "--calibration", str(calib),
            "--recipe", "distill"]
    with pytest.raises(SystemExit, match="must be positive"):
        main(base + ["-o", str(tmp_path / "bad"), "--distill-steps", "0"])

    calls = []
    real = shflbw.recover.distill_

    def spy(student, teacher, data, config):
        calls.append(config)
        dense = transformers.AutoModel.from_pretrained(hf).eval()
        with torch.no_grad():  # the teacher is the dense model, the student is masked
            b = data[0]
            assert torch.equal(teacher(**b).last_hidden_state, dense(**b).last_hidden_state)
        return real(student, teacher, data, config, progress=False)

    monkeypatch.setattr(shflbw.recover, "distill_", spy)
    assert main(base + ["-o", str(tmp_path / "d"), "--distill-steps", "12", "--distill-minutes", "2"]) == 0
    assert "pruned 6 layers (distill" in capsys.readouterr().out
    assert len(calls) == 1 and (calls[0].steps, calls[0].lr, calls[0].time_budget) == (12, 2e-4, 120.0)
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert (report["recipe"], report["distill_steps"]) == ("distill", 12)
    assert all(abs(r["sparsity"] - 0.5) < 1e-9 for r in report["layers"].values())  # uniform, masks kept
    model = load_pruned(str(tmp_path / "d"))
    assert not model.training
    ids = torch.randint(0, 20, (2, 9))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).last_hidden_state).all()


def test_prune_oneshot_options_default_to_the_recipe_constants(tmp_path, monkeypatch):
    # `shflbw prune --recipe oneshot` takes --fit-bias / --allocate from recover.recipes unless told,
    # as `shflbw eval` does; the recipe itself is stubbed (the test above runs it for real).

    transformers = pytest.importorskip("transformers")
    import shflbw.prune_checkpoint as pc
    import shflbw.recover.recipes as recipes

    seen = []

    def fake_recipe(model, cfg, batches, recipe, fit_bias, allocate, dcfg):
        seen.append((fit_bias, allocate))
        raise ValueError("stub: stop before pruning")

    monkeypatch.setattr(pc, "_apply_recipe", fake_recipe)
    monkeypatch.setattr(recipes, "ONESHOT_FIT_BIAS", False)
    monkeypatch.setattr(recipes, "ONESHOT_ALLOCATE", False)
    hf = tmp_path / "hf"
    _tiny_bert_with_tokenizer(hf, transformers)
    base = ["prune", str(hf), "-o", str(tmp_path / "o"), "--device", "cpu", "--recipe", "oneshot",
            "--calibration", str(_texts(tmp_path / "c.txt", 4, seed=0))]
    for extra in ([], ["--fit-bias"], ["--allocate", "--no-fit-bias"]):
        with pytest.raises(SystemExit, match="stub: stop before pruning"):
            main(base + extra)
    assert seen == [(False, False), (True, False), (False, True)]
