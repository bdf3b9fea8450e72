import pytest

from shflbw.cli import main
from shflbw.eval.study import cells, run_study


def test_cells_cover_the_grid():
    c = cells(("unstructured", "2:4", "vector", "block", "shfl_bw"), (0.5, 0.75), (32, 64))
    assert ("2:4", 0.5, None) in c and ("2:4", 0.75, None) not in c  # 2:4 is 50 % by definition
    assert ("shfl_bw", 0.75, 32) in c and ("shfl_bw", 0.75, 64) in c and ("block", 0.5, None) in c
    assert len(c) == 2 * (1 + 2 + 1 + 2) + 1
    assert len(set(c)) == len(c)


@pytest.mark.parametrize("kwargs,match", [
    (dict(methods=("finetune",)), "method"),
    (dict(patterns=("diagonal",)), "pattern"),
    (dict(sparsities=(1.0,)), "sparsity"),
    (dict(vectors=(24,)), "multiple of 16"),
    (dict(distill_minutes=0), "positive"),
])
def test_bad_arguments_fail_before_any_work(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_study(**kwargs)


def test_cli_reports_bad_arguments():
    with pytest.raises(SystemExit, match="unknown method"):
        main(["eval", "--methods", "magnitude,finetune"])
    with pytest.raises(SystemExit, match="comma-separated"):
        main(["eval", "--sparsity", "half"])
