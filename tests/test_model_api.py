"""Model path on CPU: sparsify_ -> fine-tune -> compress_ -> save -> load, with every check on outputs."""

import json
import os

import pytest
import torch
from torch import nn

import shflbw
from shflbw.testing import rel_error


class TinyBlock(nn.Module):
    """A transformer block written with plain nn.Linear layers (as HF models are)."""

    def __init__(self, d=128, hidden=256):
        super().__init__()
        self.embed_proj = nn.Linear(16, d)  # excluded by the default '*embed*' pattern
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.embed_proj(x)
        a = self.norm1(h)
        att = torch.softmax(self.q(a) @ self.k(a).transpose(-1, -2) / a.shape[-1] ** 0.5, dim=-1) @ self.v(a)
        h = h + self.o(att)
        h = h + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(h))))
        return self.head(h.mean(dim=1))


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyBlock()


def test_end_to_end_transformer(tmp_path):
    model = _model()
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=64, time_budget=5)
    shflbw.sparsify_(model, cfg, progress=False)
    masked = [n for n, m in model.named_modules() if shflbw.nn.convert.is_masked(m)]
    assert sorted(masked) == ["fc1", "fc2", "k", "o", "q", "v"]  # embed_proj and head skipped by default

    # a few fine-tuning steps: pruned weights stay pruned (the mask applies to forward and gradients)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 10, 16), torch.randint(0, 3, (8,))
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert float((model.fc1.weight == 0).float().mean()) >= 0.75

    model.eval()
    xe = torch.randn(4, 10, 16)
    with torch.no_grad():
        ref = model(xe)
    shflbw.compress_(model)
    assert isinstance(model.fc1, shflbw.ShflBWLinear) and "V=64" in repr(model.fc1) and "sparsity=75.0%" in repr(model.fc1)
    with torch.no_grad():
        assert rel_error(model(xe), ref) < 1e-5

    out = tmp_path / "ckpt"
    shflbw.save(model, str(out), config=cfg)
    loaded = shflbw.load(str(out), _model(seed=1))  # other random weights: everything must come from the file
    with torch.no_grad():
        assert rel_error(loaded(xe), ref) < 1e-5
    meta = json.loads((out / "shflbw.json").read_text())
    assert shflbw.ShflBWConfig.from_json(json.dumps(meta["config"])) == cfg

    # decompress_ goes back to masked mode with the same function
    shflbw.decompress_(loaded)
    with torch.no_grad():
        assert rel_error(loaded(xe), ref) < 1e-5
    assert shflbw.nn.convert.is_masked(loaded.fc1)


def test_saved_size_reflects_sparsity(tmp_path):
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(512, 512, bias=False), nn.Linear(512, 512, bias=False)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    model = Wide()
    dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    shflbw.sparsify_(model, shflbw.ShflBWConfig(sparsity=0.75, vector=64, time_budget=5), progress=False)
    shflbw.compress_(model)
    shflbw.save(model, str(tmp_path / "c"))
    size = sum(f.stat().st_size for f in (tmp_path / "c").iterdir())
    assert size / dense_bytes <= 0.30, size / dense_bytes


def test_load_onto_meta_skeleton(tmp_path):
    model = _model()
    shflbw.sparsify_(model, shflbw.ShflBWConfig(sparsity=0.5, vector=32, time_budget=5), progress=False)
    shflbw.compress_(model)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = model(x)
    shflbw.save(model, str(tmp_path / "m"))
    with torch.device("meta"):
        skeleton = _model()
    loaded = shflbw.load(str(tmp_path / "m"), skeleton)
    with torch.no_grad():
        assert rel_error(loaded(x), ref) < 1e-5


def test_meta_skeleton_with_non_persistent_buffer_is_refused(tmp_path):
    class WithBuffer(TinyBlock):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(1), persistent=False)

    torch.manual_seed(0)
    model = shflbw.compress_(shflbw.sparsify_(WithBuffer(), shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False))
    shflbw.save(model, str(tmp_path / "m"))
    with torch.device("meta"):
        skeleton = WithBuffer()
    with pytest.raises(ValueError, match=r"still on the meta device: \['scale'\]"):
        shflbw.load(str(tmp_path / "m"), skeleton)


def test_activation_importance_needs_and_uses_calibration():
    model = _model()
    cfg = shflbw.ShflBWConfig(sparsity=0.5, vector=32, importance="activation", time_budget=5)
    with pytest.raises(ValueError, match="calibration"):
        shflbw.sparsify_(model, cfg, progress=False)
    batches = [torch.randn(4, 10, 16) for _ in range(3)]
    shflbw.sparsify_(model, cfg, calibration=batches, progress=False)
    assert shflbw.nn.convert.is_masked(model.q)


def test_layer_types_choose_which_module_types_are_pruned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 6 * 6, 64), nn.ReLU(),
                          nn.Linear(64, 64))
    shflbw.sparsify_(model, shflbw.ShflBWConfig(vector=16, time_budget=2, layer_types=("linear",)), progress=False)
    assert not shflbw.nn.convert.is_masked(model[0])
    assert shflbw.nn.convert.is_masked(model[3]) and shflbw.nn.convert.is_masked(model[5])
    with pytest.raises(ValueError, match=r"selects no layer \(layer_types=\('conv2d',\).*'0 \(linear\)'"):
        shflbw.sparsify_(nn.Sequential(nn.Linear(32, 32)), shflbw.ShflBWConfig(layer_types=("conv2d",)), progress=False)
    with pytest.raises(ValueError, match="layer_types must be a non-empty subset"):
        shflbw.ShflBWConfig(layer_types=("embedding",))
    with pytest.raises(ValueError, match="layer_types must be a non-empty subset"):
        shflbw.ShflBWConfig(layer_types=())
    with pytest.raises(TypeError, match="layer_types must be a sequence of strings"):
        shflbw.ShflBWConfig(layer_types="linear")


def test_gradual_schedule_reaches_final_sparsity():
    model = _model()
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=32, time_budget=2)
    sched = shflbw.CubicSparsitySchedule(cfg, total_steps=4, every=2)
    seen = [sched.step(model) for _ in range(4)]
    assert seen[0] is None and seen[1] is not None and seen[1] < 0.75 and seen[3] == pytest.approx(0.75)
    assert float((model.fc1.weight == 0).float().mean()) == pytest.approx(0.75, abs=0.01)
    with pytest.raises(ValueError, match="initial sparsity"):
        shflbw.CubicSparsitySchedule(cfg, total_steps=4, initial=0.9)
    with pytest.raises(TypeError, match="ShflBWConfig"):
        shflbw.CubicSparsitySchedule({"sparsity": 0.75}, total_steps=4)


def test_config_json_round_trip_and_overrides():
    cfg = shflbw.ShflBWConfig(sparsity=0.5, vector=32, overrides={"fc*": {"sparsity": 0.875, "vector": 64}},
                              layer_types=["conv2d"])
    back = shflbw.ShflBWConfig.from_json(cfg.to_json())
    assert back == cfg and back.layer_types == ("conv2d",)
    assert back.for_layer("fc1") == (0.875, 64) and back.for_layer("q") == (0.5, 32)


# ---------------------------------------------------------------- bad input
def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="sparsity"):
        shflbw.ShflBWConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="vector"):
        shflbw.ShflBWConfig(vector=20)
    with pytest.raises(ValueError, match="importance"):
        shflbw.ShflBWConfig(importance="taylor")
    with pytest.raises(ValueError, match="sparsity"):
        shflbw.ShflBWConfig(overrides={"q": {"sparsity": 2.0}})
    with pytest.raises(ValueError, match="unknown config keys"):
        shflbw.ShflBWConfig.from_json('{"sparsty": 0.5}')
    with pytest.raises(ValueError, match="selects no"):
        shflbw.sparsify_(_model(), shflbw.ShflBWConfig(include=("decoder.*",)), progress=False)
    with pytest.raises(ValueError, match="sparsify_"):
        shflbw.compress_(_model())
    masked = shflbw.sparsify_(_model(), shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False)
    with pytest.raises(ValueError, match="compress_"):
        shflbw.save(masked, str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="missing"):
        shflbw.load(str(tmp_path / "nothing"), _model())

    # a checkpoint of another architecture
    shflbw.compress_(masked)
    shflbw.save(masked, str(tmp_path / "ok"))

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(64, 64)

    with pytest.raises(ValueError, match="another architecture"):
        shflbw.load(str(tmp_path / "ok"), Other())
    # a corrupted weights file
    with open(tmp_path / "ok" / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="cannot be read"):
        shflbw.load(str(tmp_path / "ok"), _model())


def test_save_replaces_only_an_earlier_save_or_an_empty_directory(tmp_path):
    model = shflbw.compress_(shflbw.sparsify_(_model(), shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False))
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "results.csv").write_text("a,b")
    # the user's file, the user's folder, and the folder the user works in: each refused, each untouched
    for target in (tmp_path / "notes.txt", tmp_path / "work"):
        with pytest.raises(ValueError, match="only overwrites an earlier shflbw save or an empty directory"):
            shflbw.save(model, str(target))
    cwd = os.getcwd()
    os.chdir(tmp_path / "work")
    try:
        with pytest.raises(ValueError, match="not a shflbw model directory"):
            shflbw.save(model, ".")
    finally:
        os.chdir(cwd)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "work" / "results.csv").read_text() == "a,b"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "work"]  # no temporary directory left behind
    # an empty folder and an earlier save are replaced
    (tmp_path / "empty").mkdir()
    shflbw.save(model, str(tmp_path / "empty"))
    shflbw.save(model, str(tmp_path / "empty"))
    assert sorted(os.listdir(tmp_path / "empty")) == ["model.safetensors", "shflbw.json"]


def test_model_api_type_errors(tmp_path):
    model = _model()
    with pytest.raises(TypeError, match="config must be a shflbw.ShflBWConfig, got dict"):
        shflbw.sparsify_(model, {"sparsity": 0.5})
    shflbw.compress_(shflbw.sparsify_(model, shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False))
    with pytest.raises(ValueError, match="already compressed"):
        shflbw.compress_(model)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        shflbw.compress_("model")
    shflbw.save(model, str(tmp_path / "c"))
    with pytest.raises(TypeError, match="skeleton must be the model"):
        shflbw.load(str(tmp_path / "c"), "TinyBlock")


def test_failed_save_keeps_the_previous_directory(tmp_path, monkeypatch):
    model = shflbw.compress_(shflbw.sparsify_(_model(), shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False))
    shflbw.save(model, str(tmp_path / "c"))
    before = (tmp_path / "c" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        shflbw.save(model, str(tmp_path / "c"))
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_save_extra_files_join_the_directory_or_nothing_changes(tmp_path):
    model = shflbw.compress_(shflbw.sparsify_(_model(), shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False))
    shflbw.save(model, str(tmp_path / "c"), extra=lambda d: open(os.path.join(d, "note.txt"), "w").write("hi"))
    assert (tmp_path / "c" / "note.txt").read_text() == "hi"
    before = {f: (tmp_path / "c" / f).read_bytes() for f in os.listdir(tmp_path / "c")}

    def half_written(d):
        open(os.path.join(d, "report.json"), "w").write("{")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        shflbw.save(model, str(tmp_path / "c"), extra=half_written)
    assert {f: (tmp_path / "c" / f).read_bytes() for f in os.listdir(tmp_path / "c")} == before
    assert sorted(os.listdir(tmp_path)) == ["c"]  # no temporary directory left behind


def test_compressed_model_compiles_without_graph_breaks():
    model = shflbw.compress_(shflbw.sparsify_(_model(), shflbw.ShflBWConfig(vector=32, time_budget=2), progress=False))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    assert rel_error(out, ref) < 1e-6


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding="same", dilation=2)
        self.conv3 = nn.Conv2d(32, 64, 1, stride=2)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.head(h.mean(dim=(2, 3)))


def test_end_to_end_cnn(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN()
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, time_budget=2)
    shflbw.sparsify_(model, cfg, progress=False)
    assert shflbw.nn.convert.is_masked(model.conv2) and not shflbw.nn.convert.is_masked(model.head)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float((model.conv2.weight == 0).float().mean()) == pytest.approx(0.75, abs=0.02)
    model.eval()
    xe = torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(xe)
    shflbw.compress_(model)
    assert isinstance(model.conv2, shflbw.ShflBWConv2d) and "V=16" in repr(model.conv2)
    with torch.no_grad():
        assert rel_error(model(xe), ref) < 1e-5
    shflbw.save(model, str(tmp_path / "cnn"))
    torch.manual_seed(1)
    loaded = shflbw.load(str(tmp_path / "cnn"), TinyCNN())
    with torch.no_grad():
        assert rel_error(loaded(xe), ref) < 1e-5
    shflbw.decompress_(loaded)
    assert isinstance(loaded.conv2, nn.Conv2d) and shflbw.nn.convert.is_masked(loaded.conv2)
    with torch.no_grad():
        assert rel_error(loaded(xe), ref) < 1e-5


def test_keep_kernels_option_for_conv():
    torch.manual_seed(0)
    model = TinyCNN()
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, keep_kernels=True, time_budget=2)
    assert shflbw.ShflBWConfig.from_json(cfg.to_json()) == cfg
    shflbw.sparsify_(model, cfg, progress=False)
    mask = shflbw.nn.masked.mask_of(model.conv2).mask  # [32, 32, 3, 3]
    per_kernel = mask.flatten(2)
    assert bool((per_kernel.all(dim=2) | ~per_kernel.any(dim=2)).all())
    shflbw.compress_(model)
    assert isinstance(model.conv2, shflbw.ShflBWConv2d)
