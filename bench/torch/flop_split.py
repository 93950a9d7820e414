#!/usr/bin/env python3
"""Where the FLOPs of a PyTorch twin go: per top-level module and per operator.

Runs one call of each named benchmark of `bench_torch.py` (after one untimed call) under
torch.utils.flop_counter.FlopCounterMode and prints the total, each top-level module's share
(the trainer step's encoder/comparator AlexNets, generator, discriminator) split by operator
(convolution forward, convolution backward, addmm, mm), and the floor those FLOPs set at a
given FMA peak: the time the step cannot go under even if every multiply-add ran at the peak.

    ~/.torch-venv/bin/python bench/torch/flop_split.py \
        --only deepsim_train_step_b8_64,deepsim_train_step_b8_256 --fma-peak 224

FLOPs count 2 per multiply-add of convolutions and matrix products only, as bench_torch.py
counts them (activations, pooling, losses and Adam are memory-bound and not counted).
"""
import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_torch  # noqa: E402


def split(run):
    """(total, {module: {op: flops}}) of one call of `run`, after one untimed call."""
    run()
    with FlopCounterMode(display=False, depth=None) as counter:
        run()
    per_module = collections.OrderedDict()
    for module, ops in counter.get_flop_counts().items():
        if module == "Global" or "." in module:
            continue
        per_module[module] = {str(op).removeprefix("aten."): n for op, n in ops.items()}
    per_module["(all)"] = {
        str(op).removeprefix("aten."): n for op, n in counter.get_flop_counts()["Global"].items()
    }
    return counter.get_total_flops(), per_module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", required=True,
                        help="comma-separated whole benchmark names of bench_torch.py")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fma-peak", type=float, default=None,
                        help="GFLOP/s of the FMA probe: prints the floor the FLOPs set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    benchmarks = {name: setup for name, _, setup in bench_torch.make_benchmarks()}
    for name in args.only.split(","):
        if name not in benchmarks:
            parser.error(f"no benchmark named {name!r} in bench_torch.py")
        total, per_module = split(benchmarks[name]())
        print(f"{name}: {total / 1e9:.2f} GFLOP a call")
        for module, ops in per_module.items():
            parts = ", ".join(f"{op} {n / 1e9:.2f}" for op, n in ops.items())
            print(f"  {module:24s} {sum(ops.values()) / 1e9:8.2f} GFLOP  ({parts})")
        if args.fma_peak:
            print(f"  floor at {args.fma_peak:.0f} GFLOP/s: {total / args.fma_peak / 1e6:.0f} ms")


if __name__ == "__main__":
    main()
