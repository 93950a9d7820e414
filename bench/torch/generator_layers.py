#!/usr/bin/env python3
"""Per-layer timings of the DeePSiM trainer step's convolutions (batch 8) in PyTorch: the twin
of `cargo run --release -p deepsim-kernels --example generator_layers` (same layers, same
three timings, median of 10 calls after 2 warm-ups, 2 threads). `NET` picks the layers as
there: generator64 (default), generator256 or discriminator227; `LAYER=N` one layer only."""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
BATCH = 8


def up(ci, co, h):
    return (True, ci, co, 4, 2, 1, h)


def conv(ci, co, k, stride, h):
    return (False, ci, co, k, stride, k // 2, h)


GENERATOR64 = [up(256, 256, 4), conv(256, 512, 3, 1, 8), up(512, 256, 8),
               conv(256, 256, 3, 1, 16), up(256, 128, 16), conv(128, 128, 3, 1, 32),
               up(128, 3, 32)]
NETS = {
    "generator64": GENERATOR64,
    "generator256": GENERATOR64[:-1] + [up(128, 64, 32), up(64, 32, 64), up(32, 3, 128)],
    "discriminator227": [conv(3, 32, 7, 4, 227), conv(32, 64, 5, 1, 57), conv(64, 128, 3, 2, 57),
                         conv(128, 256, 3, 1, 29), conv(256, 256, 3, 2, 29)],
}


def timed(f):
    v = []
    for i in range(12):
        t = time.perf_counter()
        f()
        if i >= 2:
            v.append((time.perf_counter() - t) * 1e3)
    return statistics.median(v)


net = os.environ.get("NET", "generator64")
if net not in NETS:
    sys.exit(f"NET={net}: expected one of {', '.join(NETS)}")
only = os.environ.get("LAYER")
total = [0.0, 0.0, 0.0]
print(f"layer ({net})    fwd (ms)  fwd+bwd (ms)  fwd+wgrad (ms)  fwd+bwd GFLOP/s")
for index, (is_up, ci, co, k, stride, pad, h) in enumerate(NETS[net]):
    if only is not None and int(only) != index:
        continue
    x = torch.randn(BATCH, ci, h, h, requires_grad=True)
    if is_up:
        w = (torch.randn(ci, co, k, k) * 0.05).requires_grad_(True)
        run = lambda x: F.conv_transpose2d(x, w, stride=stride, padding=pad)
    else:
        w = (torch.randn(co, ci, k, k) * 0.05).requires_grad_(True)
        run = lambda x: F.conv2d(x, w, stride=stride, padding=pad)
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
    side = 2 * h if is_up else (h + 2 * pad - k) // stride + 1
    macs = BATCH * ci * co * (h * h if is_up else side * side) * k * k
    kind = "up" if is_up else f"c{k}s{stride}"
    print(f"{kind:4} {ci:3}→{co:3} @{h:3}→{side:3}    {t[0]:8.2f}  {t[1]:12.2f}  {t[2]:14.2f}  "
          f"{6 * macs / t[1] / 1e6:15.0f}")
    total = [a + b for a, b in zip(total, t)]
print(f"total                      {total[0]:8.1f}  {total[1]:12.1f}  {total[2]:14.1f}")
