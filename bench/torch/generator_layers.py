#!/usr/bin/env python3
"""Per-layer timings of the DeePSiM step's 64-pixel generator tower (batch 8) in PyTorch: the
twin of `cargo run --release -p deepsim-kernels --example generator_layers` (same layers, same
three timings, median of 10 calls after 2 warm-ups, 2 threads)."""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
BATCH = 8
LAYERS = [(True, 256, 256, 4), (False, 256, 512, 8), (True, 512, 256, 8), (False, 256, 256, 16),
          (True, 256, 128, 16), (False, 128, 128, 32), (True, 128, 3, 32)]


def timed(f):
    v = []
    for i in range(12):
        t = time.perf_counter()
        f()
        if i >= 2:
            v.append((time.perf_counter() - t) * 1e3)
    return statistics.median(v)


total = [0.0, 0.0, 0.0]
print("layer                     fwd (ms)  fwd+bwd (ms)  fwd+wgrad (ms)  fwd+bwd GFLOP/s")
for up, ci, co, h in LAYERS:
    x = torch.randn(BATCH, ci, h, h, requires_grad=True)
    if up:
        w = (torch.randn(ci, co, 4, 4) * 0.05).requires_grad_(True)
        run = lambda x: F.conv_transpose2d(x, w, stride=2, padding=1)
    else:
        w = (torch.randn(co, ci, 3, 3) * 0.05).requires_grad_(True)
        run = lambda x: F.conv2d(x, w, padding=1)
    r = torch.randn_like(run(x))
    frozen_x = x.detach()

    def fwd():
        with torch.no_grad():
            run(x)

    def bwd(inp):
        def go():
            x.grad, w.grad = None, None
            (run(inp) * r).sum().backward()
        return go

    t = [timed(fwd), timed(bwd(x)), timed(bwd(frozen_x))]
    side = 2 * h if up else h
    macs = BATCH * ci * co * h * h * (16 if up else 9)
    kind = "up" if up else "conv"
    print(f"{kind:4} {ci:3}→{co:3} @{h:2}→{side:2}      {t[0]:8.2f}  {t[1]:12.2f}  {t[2]:14.2f}  "
          f"{6 * macs / t[1] / 1e6:15.0f}")
    total = [a + b for a, b in zip(total, t)]
print(f"total                     {total[0]:8.1f}  {total[1]:12.1f}  {total[2]:14.1f}")
