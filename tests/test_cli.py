import subprocess
import sys

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


def test_bench_unknown_kind():
    assert main(["bench", "attention"]) == 2


def test_prune_checkpoint_round_trip(tmp_path, capsys):
    import pytest

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
    import pytest

    with pytest.raises(SystemExit, match="not a Hugging Face model directory"):
        main(["prune", str(tmp_path), "-o", str(tmp_path / "o")])
