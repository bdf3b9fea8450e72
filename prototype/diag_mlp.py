import sys, os, torch, torch.nn.functional as F
sys.path.insert(0, os.getcwd())
from benchmarks.run_mlp import packed
from benchmarks.timing import median_us
from shflbw import PackedMLP, linear, mlp
for hdim in (11008, 16384):
  for s in (0.75, 0.875):
    for t in (4096,):
        gen = torch.Generator().manual_seed(0)
        w1, w1m, p1 = packed(hdim, 4096, 64, 1 - s, gen)
        w2, w2m, p2 = packed(4096, hdim, 64, 1 - s, gen)
        b1 = torch.randn(hdim, generator=gen).to(torch.bfloat16).cuda(); b2 = torch.randn(4096, generator=gen).to(torch.bfloat16).cuda()
        x = torch.randn(t, 4096, device="cuda", dtype=torch.bfloat16)
        h = F.gelu(linear(x, p1, b1))
        block = PackedMLP(p1, p2, b1, b2, "gelu")
        g1 = (p1.group_ptr[1:] - p1.group_ptr[:-1]).float(); g2 = (p2.group_ptr[1:] - p2.group_ptr[:-1]).float()
        print(hdim, s, "fc1 kept/group min/mean/max", g1.min().item(), g1.mean().item(), g1.max().item(),
              "fc2", g2.min().item(), g2.mean().item(), g2.max().item())
        print("  fc1", round(median_us(lambda: linear(x, p1, b1)),1), "fc2", round(median_us(lambda: linear(h, p2, b2)),1),
              "gelu", round(median_us(lambda: F.gelu(h)),1), "mlp", round(median_us(lambda: mlp(x, block)),1),
              "per-layer", round(median_us(lambda: linear(F.gelu(linear(x, p1, b1)), p2, b2)),1),
              "dense fc1", round(median_us(lambda: F.linear(x, w1, b1)),1), "dense fc2", round(median_us(lambda: F.linear(h, w2, b2)),1), flush=True)
