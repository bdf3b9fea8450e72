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
