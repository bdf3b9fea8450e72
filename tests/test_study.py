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


def test_merge_keeps_one_dense_row(tmp_path):
    import json

    from shflbw.eval.study import merge

    def row(pattern, method, lee):
        return {"pattern": pattern, "sparsity": 0.0 if method == "dense" else 0.75, "vector": None, "method": method,
                "lee_pearson": lee, "polarity": 0.7, "polarity_ci95": [0.6, 0.8], "wordsim353": 0.5,
                "simlex999": 0.4, "cosine_to_dense": 1.0}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"device": "cpu", "rows": [row("dense", "dense", 0.65), row("unstructured", "magnitude", 0.4)]}))
    b.write_text(json.dumps({"device": "cpu", "rows": [row("dense", "dense", 0.65), row("unstructured", "oneshot", 0.6),
                                                        {**row("unstructured", "oneshot", 0.62), "calibration_words": 4096},
                                                        {**row("unstructured", "distill", 0.63), "distill_seed": 1}]}))
    rows = merge([str(a), str(b)], str(tmp_path / "out"))
    assert [r["method"] for r in rows] == ["dense", "magnitude", "oneshot", "oneshot", "distill"]
    table = (tmp_path / "out" / "study.md").read_text()
    assert "| unstructured | 75.0% |  | oneshot |  | 0.600 |" in table  # older rows: no word count recorded
    assert "| unstructured | 75.0% |  | oneshot | 4096 | 0.620 |" in table
    assert "| unstructured | 75.0% |  | distill (seed 1) |  | 0.630 |" in table  # a repeat run is told apart
    # a run from another machine keeps its device, named in the table
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"device": "cuda", "rows": [row("dense", "dense", 0.65), row("block", "oneshot", 0.5)]}))
    rows = merge([str(a), str(c)], str(tmp_path / "out2"))
    assert [r["device"] for r in rows] == ["cpu", "cpu", "cuda"]
    assert "| block | 75.0% |  | oneshot [cuda] |" in (tmp_path / "out2" / "study.md").read_text()
    assert json.loads((tmp_path / "out2" / "study.json").read_text())["device"] == "cpu+cuda"


def _row(pattern, s, v, method, lee, words=4096, **kw):
    r = {"pattern": pattern, "sparsity": s, "vector": v, "method": method, "lee_pearson": lee, "polarity": 0.7,
         "wordsim353": 0.5, "simlex999": 0.4, "cosine_to_dense": 0.6, "calibration_words": words}
    r.update(kw)
    return r


def test_comparison_states_the_differences_and_who_is_ahead():
    from shflbw.eval.study import comparison

    dense = _row("dense", 0.0, None, "dense", 0.656)
    rows = [dense,
            _row("shfl_bw", 0.75, 64, "oneshot", 0.66, polarity=0.71, wordsim353=0.6, simlex999=0.5, cosine_to_dense=0.7),
            _row("vector", 0.75, 64, "oneshot", 0.63),
            _row("vector", 0.75, 32, "oneshot", 0.99),  # another V: not compared
            _row("block", 0.75, None, "oneshot", 0.60),
            _row("unstructured", 0.75, None, "oneshot", 0.70, polarity=0.72),
            _row("shfl_bw", 0.5, 64, "oneshot", 0.66),  # ties vector on four metrics: not ahead
            _row("vector", 0.5, 64, "oneshot", 0.65),
            _row("block", 0.5, None, "oneshot", 0.60),
            _row("shfl_bw", 0.5, 64, "distill", 0.66, words=512)]  # no vector / block cell
    lines = comparison(rows)
    s75 = next(line for line in lines if line.startswith("| 75.0% | oneshot (4096 words)"))
    assert "+0.030 / +0.010 / +0.100 / +0.100 / +0.100" in s75  # against vector V = 64, not V = 32
    assert "-0.040 / -0.010" in s75 and s75.endswith("| yes |")
    assert next(line for line in lines if line.startswith("| 50.0% | oneshot")).endswith("| no |")
    assert next(line for line in lines if line.startswith("| 50.0% | distill")).endswith("| incomplete |")
    # a regrouped one-shot is its own row beside the plain one, and says so
    rows.append(_row("shfl_bw", 0.75, 64, "oneshot", 0.50, regroup=True))
    lines = comparison(rows)
    s75 = next(line for line in lines if line.startswith("| 75.0% | oneshot + regroup"))
    assert s75.startswith("| 75.0% | oneshot + regroup (4096 words) | -0.130 /") and s75.endswith("| no |")
    assert next(line for line in lines if line.startswith("| 75.0% | oneshot (4096 words)")).endswith("| yes |")
    # a later run of the same cell replaces the earlier one
    rows.append(_row("shfl_bw", 0.75, 64, "oneshot", 0.40, regroup=True))
    s75 = next(line for line in comparison(rows) if line.startswith("| 75.0% | oneshot + regroup"))
    assert s75.startswith("| 75.0% | oneshot + regroup (4096 words) | -0.230 /")


def test_table_names_the_regrouped_one_shot(tmp_path):
    import json

    from shflbw.eval.study import merge

    a = tmp_path / "a.json"
    rows = [{**_row("dense", 0.0, None, "dense", 0.656), "polarity_ci95": [0.6, 0.8]},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.65, regroup=True), "polarity_ci95": [0.6, 0.8]},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.64), "polarity_ci95": [0.6, 0.8]}]
    a.write_text(json.dumps({"device": "cpu", "rows": rows}))
    merge([str(a)], str(tmp_path / "out"))
    table = (tmp_path / "out" / "study.md").read_text()
    assert "| shfl_bw | 75.0% | 64 | oneshot + regroup | 4096 | 0.650 |" in table
    assert "| shfl_bw | 75.0% | 64 | oneshot | 4096 | 0.640 |" in table


def test_calibration_seed_rows_are_named_and_kept_out_of_the_comparison(tmp_path):
    import json

    from shflbw.eval.study import comparison, merge

    ci = {"polarity_ci95": [0.6, 0.8]}
    rows = [{**_row("dense", 0.0, None, "dense", 0.656), **ci},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.66), **ci},
            {**_row("vector", 0.75, 64, "oneshot", 0.63), **ci},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.10, calibration_seed=2), **ci}]
    s75 = next(line for line in comparison(rows) if line.startswith("| 75.0% | oneshot"))
    assert "+0.030 /" in s75  # seed 0's row, not the later seed-2 row (0.10)
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"device": "cpu", "rows": rows}))
    merge([str(a)], str(tmp_path / "out"))
    assert "| shfl_bw | 75.0% | 64 | oneshot (calibration seed 2) | 4096 | 0.100 |" in (tmp_path / "out" / "study.md").read_text()


def test_seed_means_average_each_cell_over_its_calibration_seeds():
    from shflbw.eval.study import seed_means

    rows = [_row("dense", 0.0, None, "dense", 0.656),
            _row("shfl_bw", 0.75, 64, "oneshot", 0.90),  # not regrouped: another cell, with one seed only
            _row("shfl_bw", 0.75, 64, "oneshot", 0.60, regroup=True),
            _row("shfl_bw", 0.75, 64, "oneshot", 0.70, regroup=True, calibration_seed=1),
            _row("shfl_bw", 0.75, 64, "oneshot", 0.65, regroup=True, calibration_seed=2, polarity=0.5),
            _row("vector", 0.75, 64, "oneshot", 0.50),
            _row("vector", 0.75, 64, "oneshot", 0.60, calibration_seed=2),
            _row("vector", 0.75, 32, "oneshot", 0.99, calibration_seed=1),  # another V
            _row("block", 0.75, None, "oneshot", 0.40),  # one seed only: no row
            _row("shfl_bw", 0.75, 64, "oneshot", 0.01, distill_seed=1)]  # a repeat distillation order: left out
    lines = seed_means(rows)
    shfl = next(line for line in lines if "| shfl_bw |" in line)
    assert shfl.startswith("| 75.0% | oneshot + regroup (4096 words) | shfl_bw | 0, 1, 2 | 0.650 (0.600-0.700) |")
    assert "| 0.633 (0.500-0.700) |" in shfl  # polarity 0.7, 0.7, 0.5
    vec = next(line for line in lines if "| vector |" in line)
    assert "| 0, 2 | 0.550 (0.500-0.600) |" in vec
    assert not any("| block |" in line for line in lines)
    # on the seeds both ran (0 and 2): Lee (0.60 - 0.50 + 0.65 - 0.60) / 2, polarity (0 - 0.2) / 2
    diff = next(line for line in lines if line.startswith("- 75.0% oneshot"))
    assert diff == "- 75.0% oneshot + regroup (4096 words), seeds 0, 2: +0.075 / -0.100 / +0.000 / +0.000 / +0.000"
    assert sum("| shfl_bw |" in line for line in lines) == 1
    assert seed_means(rows[:3]) == []  # no cell has two seeds


def test_plot_keeps_v64_and_first_seeds():
    from shflbw.eval.study import plotted_series

    rows = [_row("dense", 0.0, None, "dense", 0.656),
            _row("shfl_bw", 0.75, 64, "oneshot", 0.6, regroup=True),
            _row("shfl_bw", 0.5, 64, "oneshot", 0.65, regroup=True),
            _row("shfl_bw", 0.75, 64, "oneshot", 0.7, regroup=True, calibration_seed=1),
            _row("shfl_bw", 0.75, 32, "oneshot", 0.7),
            _row("block", 0.75, None, "oneshot", 0.5),
            _row("vector", 0.75, 64, "distill", 0.6, words=512, distill_seed=1)]
    series = plotted_series(rows)
    assert sorted(len(v) for v in series.values()) == [1, 2]  # block; Shfl-BW at 50 and 75 %
    assert {k[0] for k in series} == {"shfl_bw", "block"}


def test_cli_passes_the_recipe_options_to_the_study(monkeypatch):
    import shflbw.eval.study as study

    seen = {}
    monkeypatch.setattr(study, "run_study", lambda *a, **kw: seen.update(kw))
    base = ["eval", "--patterns", "shfl_bw", "--sparsity", "0.75", "--methods", "oneshot"]
    plain = {"regroup": True, "distill_regroup": False, "distill_fit_bias": False, "distill_allocate": False}
    main(base)  # bias refit and allocation unset: run_study's defaults
    assert seen == plain
    seen.clear()
    main(base + ["--no-regroup"])
    assert seen == {**plain, "regroup": False}
    seen.clear()
    main(base + ["--distill-regroup", "--distill-fit-bias", "--distill-allocate"])
    assert seen == {**plain, "distill_regroup": True, "distill_fit_bias": True, "distill_allocate": True}
    seen.clear()
    main(base + ["--no-fit-bias", "--no-allocate"])
    assert seen == {**plain, "fit_bias": False, "allocate": False}
    seen.clear()
    main(base + ["--fit-bias", "--allocate"])  # the session-14 commands still parse
    assert seen == {**plain, "fit_bias": True, "allocate": True}


def test_study_recipe_defaults():
    import inspect

    import shflbw.eval.study as study

    defaults = {k: p.default for k, p in inspect.signature(study.run_study).parameters.items()}
    # one-shot: regrouped, biases refit, sparsity allocated; the distillation start: none of these
    assert (defaults["regroup"], defaults["fit_bias"], defaults["allocate"]) == (True, True, True)
    assert (defaults["distill_regroup"], defaults["distill_fit_bias"], defaults["distill_allocate"]) == (False,) * 3


def test_study_recipes_one_shot_and_distillation_start(monkeypatch, tmp_path):
    # The study's recipes, with the model, data and training stubbed. By default the one-shot rows
    # regroup, refit biases and allocate per-layer sparsity; the distillation start does none of these
    # (DISTILL_*); each row records what its one-shot (start) did, and 2:4 is never allocated.
    import torch

    import shflbw.demo
    import shflbw.eval.data
    import shflbw.eval.metrics
    import shflbw.recover
    import shflbw.recover.recipes

    calls, allocated = [], []
    metrics = {"lee_pearson": 0.6, "polarity": 0.7, "polarity_ci95": [0.6, 0.8], "wordsim353": 0.6,
               "simlex999": 0.4, "cosine_to_dense": 0.7}
    monkeypatch.setattr(shflbw.demo, "load_minilm", lambda path=None: (torch.nn.Linear(2, 2), None))
    monkeypatch.setattr(shflbw.eval.data, "load_eval_data", lambda: {})
    monkeypatch.setattr(shflbw.eval.data, "calibration_batches", lambda *a, **kw: [])
    monkeypatch.setattr(shflbw.eval.data, "distillation_batches", lambda *a, **kw: [])
    monkeypatch.setattr(shflbw.eval.metrics, "evaluate",
                        lambda m, tok, data, reference=None: {**metrics, "lee_embeddings": None})
    # the one-shot recipe is composed in recover.recipes (shared with `shflbw prune`): stub its solver
    monkeypatch.setattr(shflbw.recover.recipes, "oneshot_prune_",
                        lambda model, cfg, calib, pattern, score, regroup, fit_bias:
                        calls.append((regroup, fit_bias, cfg.for_layer("weight")[0])) or model)
    monkeypatch.setattr(shflbw.recover, "allocate_sparsity",
                        lambda model, cfg, calib, pattern: allocated.append(pattern) or ({"weight": 0.8}, {}))
    monkeypatch.setattr(shflbw.recover, "distill_", lambda *a, **kw: None)

    def study(**kw):
        calls.clear()
        allocated.clear()
        kw.setdefault("patterns", ("shfl_bw",))
        kw.setdefault("sparsities", (0.75,))
        return run_study(vectors=(64,), out=str(tmp_path), **kw)[1:]

    def recipe(r):
        return r["method"], r.get("regroup"), r.get("fit_bias", False), r.get("allocate", False)

    rows = study(methods=("oneshot", "distill"))
    assert calls == [(True, True, 0.8), (False, False, 0.75)]  # 4,096-word one-shot, then the 512-word start
    assert [recipe(r) for r in rows] == [("oneshot", True, True, True), ("distill", False, False, False)]
    assert rows[0]["layer_sparsity"] == {"weight": 0.8} and "layer_sparsity" not in rows[1]
    rows = study(methods=("oneshot", "distill"), distill_regroup=True, distill_fit_bias=True, distill_allocate=True)
    assert calls == [(True, True, 0.8), (True, True, 0.8)]
    assert allocated == ["shfl_bw", "shfl_bw"]  # once per calibration size (4,096 and 512 words)
    assert recipe(rows[1]) == ("distill", True, True, True)
    rows = study(methods=("oneshot",), fit_bias=False, allocate=False)
    assert calls == [(True, False, 0.75)] and not allocated
    assert recipe(rows[0]) == ("oneshot", True, False, False)
    rows = study(methods=("oneshot",), regroup=False, allocate=False)
    assert calls == [(False, True, 0.75)] and recipe(rows[0]) == ("oneshot", False, True, False)
    rows = study(methods=("oneshot",), patterns=("2:4",), sparsities=(0.5,))  # N:M fixes its own: not allocated
    assert calls == [(True, True, 0.5)] and not allocated and recipe(rows[0]) == ("oneshot", None, True, False)


def test_bias_refit_rows_are_their_own_cells(tmp_path):
    import json

    from shflbw.eval.study import comparison, merge, seed_means

    ci = {"polarity_ci95": [0.6, 0.8]}
    rows = [{**_row("dense", 0.0, None, "dense", 0.656), **ci},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.60, regroup=True), **ci},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.70, regroup=True, fit_bias=True), **ci},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.80, regroup=True, fit_bias=True, calibration_seed=1), **ci},
            {**_row("vector", 0.75, 64, "oneshot", 0.50), **ci},
            {**_row("vector", 0.75, 64, "oneshot", 0.65, fit_bias=True), **ci},
            {**_row("shfl_bw", 0.75, 64, "oneshot", 0.66, regroup=True, fit_bias=True, allocate=True), **ci}]
    lines = comparison(rows)
    plain = next(line for line in lines if line.startswith("| 75.0% | oneshot + regroup (4096 words)"))
    bias = next(line for line in lines if line.startswith("| 75.0% | oneshot + regroup + bias (4096 words)"))
    assert "| +0.100 /" in plain and "| +0.050 /" in bias  # each against vector-wise of the same recipe
    alloc = next(line for line in lines if line.startswith("| 75.0% | oneshot + regroup + bias + allocation (4096"))
    assert alloc.endswith("| n/a | n/a | n/a | incomplete |")  # no vector-wise cell with allocation
    means = [line for line in seed_means(rows) if "| shfl_bw |" in line]
    assert len(means) == 1 and means[0].startswith("| 75.0% | oneshot + regroup + bias (4096 words) | shfl_bw | 0, 1 | 0.750")
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"device": "cpu", "rows": rows}))
    merge([str(a)], str(tmp_path / "out"))
    assert "| shfl_bw | 75.0% | 64 | oneshot + regroup + bias | 4096 | 0.700 |" in (tmp_path / "out" / "study.md").read_text()
