#!/usr/bin/env python3
"""PyTorch CPU performance anchor for a DeePSiM / LPIPS-style perceptual loss.

Run (see README.md beside this file for the one-time setup):
    python bench_torch.py [--iters 10] [--warmup 3] [--threads 2]
        [--only SUBSTR[,SUBSTR...]] [--out torch_results.json]

Every benchmark: float32, CPU, torch.set_num_threads(--threads), --warmup untimed calls,
then --iters timed calls; the median is reported (min and all samples go to the JSON).
FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (2 FLOPs per MAC; conv,
conv-transpose, mm/addmm/bmm only; ReLU, pooling, LRN, loss and Adam updates are not counted),
over exactly the work the timed call does (forward and, where present, backward).

Shapes/definitions are fixed so that a Rust/candle port can reproduce them one-to-one:
  alexnet_tv   torchvision.models.alexnet(weights=None).features  (conv1..relu5 + pool5)
  caffenet     original Caffe AlexNet as DeePSiM used it (96/256g2/384/384g2/256g2, LRN, ceil pools)
  vgg16_r53    torchvision.models.vgg16(weights=None).features[:30] (up to relu5_3, as LPIPS-vgg)
  lpips_*      lpips.LPIPS(net=..., pretrained=True [lin weights shipped in wheel], pnet_rand=True)
  deepsim_*    DeePSiM generator (paper Table 1) + frozen alexnet_tv conv5 (features[:12]) feature
               loss + image MSE, backward, Adam step.
  deepsim_train_step_*  one step of `deepsim train` on the paper's settings (deepsim's
               TrainerStepWorkload): alexnet_tv relu6 encoder, generator, the paper's conditioned
               discriminator, feature + image + adversarial terms, fused Adam for G and D, the
               pause rule; `_compiled` with torch.compile on every module.
Peak memory: `--only NAME --exact --rss` runs one benchmark in this process and prints its peak
resident set (ru_maxrss), to compare with `deepsim bench NAME`'s peak_resident.
"fwdbwd_in" = forward + backward w.r.t. the input image only (frozen network), i.e. the cost
of a perceptual loss per generator step; "fwdbwd_w" also computes weight gradients.
"""
import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode


# ----------------------------------------------------------------------------- models
def alexnet_tv(upto=None):
    f = torchvision.models.alexnet(weights=None).features
    return f if upto is None else f[:upto]


def caffenet_features():
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True), lrn(),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True), lrn(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
    )


def vgg16_relu5_3():
    return torchvision.models.vgg16(weights=None).features[:30]


# DeePSiM generator, Dosovitskiy & Brox 2016, Table 1:
#   fc 4096 -> fc 4096 -> fc 4096 (input: 4096-d feature), reshape 256x4x4, then
#   type:   uconv conv uconv conv uconv conv uconv uconv uconv
#   outCh:  256   512  256   256  128   128  64    32    3
#   kernel: 4     3    4     3    4     3    4     4     4
#   stride: up2   1    up2   1    up2   1    up2   up2   up2      (4 -> 256 px)
# uconv = ConvTranspose2d(k4, s2, p1); conv = Conv2d(k3, s1, p1); LeakyReLU(0.3) after every
# layer except the last (linear output).
DEEPSIM_FULL = [("u", 256), ("c", 512), ("u", 256), ("c", 256), ("u", 128), ("c", 128),
                ("u", 64), ("u", 32), ("u", 3)]                       # 256x256 output
DEEPSIM_64 = [("u", 256), ("c", 512), ("u", 256), ("c", 256), ("u", 128), ("c", 128),
              ("u", 3)]                                               # 64x64 output (reduced)


class DeePSiMGenerator(nn.Module):
    def __init__(self, spec=DEEPSIM_FULL, in_dim=4096, slope=0.3):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(in_dim, 4096), nn.LeakyReLU(slope, inplace=True),
            nn.Linear(4096, 4096), nn.LeakyReLU(slope, inplace=True),
            nn.Linear(4096, 4096), nn.LeakyReLU(slope, inplace=True))
        layers, cin = [], 256
        for i, (t, cout) in enumerate(spec):
            if t == "u":
                layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            else:
                layers.append(nn.Conv2d(cin, cout, 3, stride=1, padding=1))
            if i < len(spec) - 1:
                layers.append(nn.LeakyReLU(slope, inplace=True))
            cin = cout
        self.conv = nn.Sequential(*layers)

    def forward(self, z):
        return self.conv(self.fc(z).view(-1, 256, 4, 4))


# DeePSiM discriminator, the paper's (deepsim-models' DiscriminatorConfig::paper), conditioned on
# the generator's input y: conv 32 7x7/4, 64 5x5/1, 128 3x3/2, 256 3x3/1, 256 3x3/2 (padding k//2),
# LeakyReLU(0.3) after each; global average pooling; dropout; y through fc 512, fc 512 (LeakyReLU),
# concatenated; fc 512 (LeakyReLU); dropout; fc 2 (generated, real). Dropout takes the caller's
# masks (0 or 1/(1-p)), as deepsim's trainer draws them, the generated images' two passes
# sharing one draw.
class DeePSiMDiscriminator(nn.Module):
    def __init__(self, cond_dim=4096, slope=0.3):
        super().__init__()
        layers, cin = [], 3
        for cout, k, st in ((32, 7, 4), (64, 5, 1), (128, 3, 2), (256, 3, 1), (256, 3, 2)):
            layers += [nn.Conv2d(cin, cout, k, stride=st, padding=k // 2), nn.LeakyReLU(slope)]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.condition = nn.Sequential(nn.Linear(cond_dim, 512), nn.LeakyReLU(slope),
                                       nn.Linear(512, 512), nn.LeakyReLU(slope))
        self.fc = nn.Sequential(nn.Linear(cin + 512, 512), nn.LeakyReLU(slope))
        self.out = nn.Linear(512, 2)

    def forward(self, x, y, pooled_mask, hidden_mask):
        h = self.convs(x).mean((2, 3)) * pooled_mask
        h = torch.cat([h, self.condition(y)], 1)
        return self.out(self.fc(h) * hidden_mask)


class AlexNetTaps(nn.Module):
    """torchvision's AlexNet (random weights) on [0, 1] images, ImageNet-normalized as
    deepsim's comparators do: `upto="relu5"` (features[:12]) or `"relu6"` (pool5, the adaptive
    6x6 pool, fc6, ReLU; the encoder whose features the generator inverts)."""

    def __init__(self, upto):
        super().__init__()
        net = torchvision.models.alexnet(weights=None)
        if upto == "relu5":
            self.body = net.features[:12]
        else:
            self.body = nn.Sequential(net.features, net.avgpool, nn.Flatten(1),
                                      net.classifier[1], net.classifier[2])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.body((x - self.mean) / self.std)


class StraightThroughClamp(torch.autograd.Function):
    """clamp(x, 0, 1) forward, the identity's gradient (deepsim's straight_through_clamp)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        return g


def frozen(m):
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# ----------------------------------------------------------------------------- helpers
DEVICE = torch.device("cpu")  # --device: where models and inputs live


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return ts


def count_flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def lscpu_info():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    kv = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            kv[k.strip()] = v.strip()
    flags = set(kv.get("Flags", "").split())
    mhz = None
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read())
            mhz = float(m.group(1)) if m else None
    except OSError:
        pass
    vendor, family = kv.get("Vendor ID", ""), int(kv.get("CPU family", "0") or 0)
    cores = int(kv.get("CPU(s)", os.cpu_count() or 1))
    has512, hasfma = "avx512f" in flags, "fma" in flags
    # fp32 FLOP/cycle/core = FMA pipes * lanes * 2.  Two FMA pipes on all of these.
    # AMD Zen 5 (family 0x1A) executes 512-bit FMAs natively (server parts): 2*16*2 = 64.
    # AMD Zen 4 (family 0x19 with AVX-512) double-pumps 256-bit units: 32.  Intel AVX-512 server: 64.
    if has512 and (vendor != "AuthenticAMD" or family >= 26):
        fpc = 64
    elif hasfma:
        fpc = 32
    else:
        fpc = 8
    theo = cores * fpc * (mhz or 0) / 1e3
    return {
        "model_name": kv.get("Model name"), "vendor": vendor, "family": family,
        "model": kv.get("Model"), "cpus": cores, "threads_per_core": kv.get("Thread(s) per core"),
        "hypervisor": kv.get("Hypervisor vendor"), "nominal_mhz": mhz,
        "avx2": "avx2" in flags, "fma": hasfma, "avx512f": has512,
        "avx512_bf16": "avx512_bf16" in flags, "avx512_vnni": "avx512_vnni" in flags,
        "fp32_flop_per_cycle_per_core_assumed": fpc,
        "theoretical_peak_gflops_all_cpus_at_nominal": round(theo, 1),
        "l2": kv.get("L2 cache"), "l3": kv.get("L3 cache"),
    }


FMA_EXE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fmapeak", "fma")


def fma_microbench():
    """Run the C FMA-throughput microbenchmark (fmapeak/fma.c next to this script), if built."""
    if not os.access(FMA_EXE, os.X_OK):
        return None
    out = subprocess.run([FMA_EXE, "100000000"], capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"(\S+)\s+threads=(\d)\s+([\d.]+) GFLOP/s", line)
        if m:
            res[f"{m.group(1)}_t{m.group(2)}"] = float(m.group(3))
    return res


def fma_probe():
    """~0.3 s AVX-512 FMA probe on all CPUs: how much FP throughput the VM gets right now.
    This VM's second vCPU is sometimes taken by the host (2 threads then give ~1 core)."""
    if not os.access(FMA_EXE, os.X_OK):
        return None
    out = subprocess.run([FMA_EXE, "50000000", "probe"], capture_output=True, text=True).stdout
    m = re.search(r"([\d.]+) GFLOP/s", out)
    return float(m.group(1)) if m else None


# ----------------------------------------------------------------------------- benchmarks
def make_benchmarks():
    """Returns list of (name, description, setup) where setup() -> zero-arg callable."""
    B = []

    def feat_fwd(model_fn, n, hw):
        def setup():
            m = frozen(model_fn()).to(DEVICE)
            x = torch.randn(n, 3, hw, hw, device=DEVICE)

            def run():
                with torch.no_grad():
                    m(x)
            return run
        return setup

    def feat_fwdbwd(model_fn, n, hw, weights=False):
        def setup():
            m = model_fn().eval().to(DEVICE)
            for p in m.parameters():
                p.requires_grad_(weights)
            x = torch.randn(n, 3, hw, hw, requires_grad=True, device=DEVICE)
            with torch.no_grad():
                tgt = m(torch.randn(n, 3, hw, hw, device=DEVICE))

            def run():
                x.grad = None
                for p in m.parameters():
                    p.grad = None
                F.mse_loss(m(x), tgt).backward()
            return run
        return setup

    for tag, fn in (("alexnet_tv", alexnet_tv), ("caffenet", caffenet_features)):
        for n, hw in ((16, 227), (64, 64)):
            B.append((f"{tag}_pool5_b{n}_{hw}_fwd", f"{tag} conv1..pool5 forward", feat_fwd(fn, n, hw)))
            B.append((f"{tag}_pool5_b{n}_{hw}_fwdbwd_in", f"{tag} fwd + bwd wrt input",
                      feat_fwdbwd(fn, n, hw)))
            if tag == "alexnet_tv":
                B.append((f"{tag}_pool5_b{n}_{hw}_fwdbwd_w", f"{tag} fwd + bwd wrt input and weights",
                          feat_fwdbwd(fn, n, hw, weights=True)))
    B.append(("vgg16_relu5_3_b4_224_fwd", "VGG16 conv1_1..relu5_3 forward", feat_fwd(vgg16_relu5_3, 4, 224)))
    B.append(("vgg16_relu5_3_b4_224_fwdbwd_in", "VGG16 ..relu5_3 fwd + bwd wrt input",
              feat_fwdbwd(vgg16_relu5_3, 4, 224)))

    def lpips_setup(net, n, hw):
        def setup():
            import lpips
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = frozen(lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)).to(DEVICE)
            x = torch.rand(n, 3, hw, hw, requires_grad=True, device=DEVICE) * 2 - 1
            x = x.detach().requires_grad_(True)
            y = torch.rand(n, 3, hw, hw, device=DEVICE) * 2 - 1

            def run():
                x.grad = None
                m(x, y).mean().backward()
            return run
        return setup

    B.append(("lpips_alex_b16_227_fwdbwd_in", "LPIPS-alex(x,y).mean() fwd(both)+bwd wrt x",
              lpips_setup("alex", 16, 227)))
    B.append(("lpips_alex_b64_64_fwdbwd_in", "LPIPS-alex fwd(both)+bwd wrt x", lpips_setup("alex", 64, 64)))
    B.append(("lpips_vgg_b4_224_fwdbwd_in", "LPIPS-vgg fwd(both)+bwd wrt x", lpips_setup("vgg", 4, 224)))

    def pair_metric(kind, compiled):
        """LPIPS-alex (random trunk, shipped heads) or ST-LPIPS-alex (stlpips_pytorch 0.0.2, its
        shipped trunk and heads, inputs in [0, 1] with normalize=True); torch.compile'd when asked."""
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "lpips":
                import lpips
                m = frozen(lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False)).to(DEVICE)
                fn = lambda a, b: m(a * 2 - 1, b * 2 - 1)
            else:
                from stlpips_pytorch import stlpips   # needs ipython and torchsummary installed
                m = frozen(stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)).to(DEVICE)
                fn = lambda a, b: m(a, b, normalize=True)
        return torch.compile(fn) if compiled else fn

    def pair_setup(kind, n, h, w, backward, compiled=False):
        def setup():
            metric = pair_metric(kind, compiled)
            x = torch.rand(n, 3, h, w, device=DEVICE, requires_grad=backward)
            y = torch.rand(n, 3, h, w, device=DEVICE)
            if backward:
                def run():
                    x.grad = None
                    metric(x, y).mean().backward()
            else:
                def run():
                    with torch.no_grad():
                        metric(x, y)
            return run
        return setup

    for kind in ("lpips", "stlpips"):
        for compiled in (False, True):
            tag = f"{kind}_compiled" if compiled else kind
            B.append((f"{tag}_alex_fwd_pair_1080x800", f"{kind}-alex, one 1080x800 pair, no gradient",
                      pair_setup(kind, 1, 800, 1080, False, compiled)))
            if kind == "stlpips":
                B.append((f"{tag}_alex_fwdbwd_in_b16_227", "ST-LPIPS-alex, 16 pairs at 227, bwd to x",
                          pair_setup(kind, 16, 227, 227, True, compiled)))
                B.append((f"{tag}_alex_fwdbwd_in_pair_1080x800", "ST-LPIPS-alex, one 1080x800 pair, bwd to x",
                          pair_setup(kind, 1, 800, 1080, True, compiled)))

    def vit_setup(kind, n, hw, backward, compiled=False):
        """transformers' CLIP ViT-B/32 image tower with its projection (`image_embeds`) or
        DINOv2 ViT-S/14 (`pooler_output`, the normed class token), random weights, the configs
        of openai/clip-vit-base-patch32 and facebook/dinov2-small, SDPA attention (the default,
        transformers' fastest on a CPU), on normalized pixels: the forward alone, or with the
        gradient of an MSE to a fixed target w.r.t. the pixels; torch.compile'd when asked."""
        def setup():
            import transformers
            torch.manual_seed(0)
            if kind == "clip":
                cfg = transformers.CLIPVisionConfig(
                    hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512,
                    hidden_act="quick_gelu", layer_norm_eps=1e-5)
                m = transformers.CLIPVisionModelWithProjection(cfg)
                fn = lambda x: m(pixel_values=x).image_embeds
            else:
                cfg = transformers.Dinov2Config(
                    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                    image_size=518, patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6)
                m = transformers.Dinov2Model(cfg)
                fn = lambda x: m(pixel_values=x).pooler_output
            frozen(m).to(DEVICE)
            if compiled:
                fn = torch.compile(fn)
            x = torch.randn(n, 3, hw, hw, device=DEVICE, requires_grad=backward)
            with torch.no_grad():
                tgt = fn(torch.randn(n, 3, hw, hw, device=DEVICE))
            if backward:
                def run():
                    x.grad = None
                    F.mse_loss(fn(x), tgt).backward()
            else:
                def run():
                    with torch.no_grad():
                        fn(x)
            return run
        return setup

    for kind, tag in (("clip", "clip_vit_b32"), ("dino", "dinov2_vits14")):
        for compiled in (False, True):
            suffix = "_compiled" if compiled else ""
            B.append((f"{tag}_b8_224_fwd{suffix}", f"{tag} (transformers) forward to the embedding",
                      vit_setup(kind, 8, 224, False, compiled)))
            B.append((f"{tag}_b8_224_fwdbwd_in{suffix}", f"{tag} fwd + bwd of an embedding MSE wrt pixels",
                      vit_setup(kind, 8, 224, True, compiled)))

    def deepsim_setup(spec, res, n, part, compiled=False, **adam_kw):
        def setup():
            torch.manual_seed(0)
            G = DeePSiMGenerator(spec).to(DEVICE)
            C = frozen(alexnet_tv(upto=12)).to(DEVICE)  # conv1..relu5 (conv5 features)
            if compiled:                             # inductor, forward and backward graphs
                G, C = torch.compile(G), torch.compile(C)
            # default Adam on CPU = single-tensor for-loop implementation (foreach/fused off)
            opt = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.9, 0.999), **adam_kw)  # the paper's Adam
            z = torch.randn(n, 4096, device=DEVICE)
            target = torch.randn(n, 3, res, res, device=DEVICE)
            lam_feat, lam_img = 1.0, 1.0             # DeePSiM also has an adversarial term: omitted

            def crop(t):                             # comparator sees a 227 centre crop of 256 output
                if res <= 227:
                    return t
                o = (res - 227) // 2
                return t[:, :, o:o + 227, o:o + 227]

            if part == "gen_fwd":
                def run():
                    with torch.no_grad():
                        G(z)
            elif part == "adam_only":
                for p in G.parameters():
                    p.grad = torch.randn_like(p)

                def run():
                    opt.step()
            else:
                def run():
                    opt.zero_grad(set_to_none=True)
                    y = G(z)
                    with torch.no_grad():
                        ft = C(crop(target))
                    loss = lam_feat * F.mse_loss(C(crop(y)), ft) + lam_img * F.mse_loss(y, target)
                    loss.backward()
                    opt.step()
            return run
        return setup

    for spec, res in ((DEEPSIM_FULL, 256), (DEEPSIM_64, 64)):
        B.append((f"deepsim_gen_b8_{res}_fwd", f"DeePSiM generator forward, {res}px out",
                  deepsim_setup(spec, res, 8, "gen_fwd")))
        B.append((f"deepsim_step_b8_{res}", "G fwd + AlexNet conv5 feat loss + img MSE + bwd + Adam",
                  deepsim_setup(spec, res, 8, "step")))
        B.append((f"deepsim_adam_only_b8_{res}", "Adam step alone over all G params",
                  deepsim_setup(spec, res, 8, "adam_only")))
        B.append((f"deepsim_step_b8_{res}_fusedadam", "same step, torch.optim.Adam(fused=True)",
                  deepsim_setup(spec, res, 8, "step", fused=True)))
        B.append((f"deepsim_adam_fused_only_b8_{res}", "Adam(fused=True) step alone",
                  deepsim_setup(spec, res, 8, "adam_only", fused=True)))
        B.append((f"deepsim_step_b8_{res}_compiled", "same step, fused Adam, G and C torch.compile'd",
                  deepsim_setup(spec, res, 8, "step", compiled=True, fused=True)))

    def train_step_setup(spec, res, n, compiled):
        """One step of `deepsim train` on the paper's settings (configs/paper-fc6.toml), as
        deepsim's TrainerStepWorkload runs Trainer::step: code y = relu6 of a frozen AlexNet on
        the batch x; G(y) clamped (straight through); D on x, on G(y) detached and on G(y),
        conditioned on y; L_feat = per-image sum of squared relu5 differences (a second frozen
        AlexNet), L_img = per-image sum of squared differences on 0-255 pixels, L_adv =
        softplus(-l_fake), L_discr = softplus(-l_real) + softplus(l_fake), l = logit_real -
        logit_generated, each averaged over the batch; total = 0.01 L_feat + 2e-6 L_img +
        100 L_adv, backward, fused Adam over G; then, unless the pause rule holds it
        (L_discr / L_adv < 0.1), L_discr backward and fused Adam over D. D's weights get no
        gradient from the generator's pass (requires_grad off for it, as pix2pix does).
        The 256 tower's output is centre-cropped to 227, the paper's training size."""
        def setup():
            torch.manual_seed(0)
            G, D = DeePSiMGenerator(spec), DeePSiMDiscriminator(4096)
            E, C = frozen(AlexNetTaps("relu6")), frozen(AlexNetTaps("relu5"))
            adam = dict(lr=2e-4, betas=(0.9, 0.999), eps=1e-8, fused=True)
            opt_g = torch.optim.Adam(G.parameters(), **adam)
            opt_d = torch.optim.Adam(D.parameters(), **adam)
            side = 227 if res == 256 else res
            o = (res - side) // 2
            # 2 * n images in memory, batches taken in turn (deepsim: the trainer's loader).
            data = (0.5 + 0.2 * torch.randn(2 * n, 3, side, side)).clamp(0, 1)
            g, d, e, c = (torch.compile(m) for m in (G, D, E, C)) if compiled else (G, D, E, C)
            counts = {"steps": 0, "d_updates": 0}

            def masks():
                return ((torch.rand(n, 256) >= 0.5).float() * 2, (torch.rand(n, 512) >= 0.5).float() * 2)

            def logit(two):
                return two[:, 1] - two[:, 0]

            def run():
                k = counts["steps"] % 2
                x = data[k * n:(k + 1) * n]
                opt_g.zero_grad(set_to_none=True)
                opt_d.zero_grad(set_to_none=True)
                with torch.no_grad():
                    y = e(x)
                    want = c(x)
                raw = g(y)[:, :, o:o + side, o:o + side]
                gen = StraightThroughClamp.apply(raw)
                real_m, fake_m = masks(), masks()
                l_real = logit(d(x, y, *real_m))
                l_fake = logit(d(gen.detach(), y, *fake_m))
                l_discr = (F.softplus(-l_real) + F.softplus(l_fake)).mean()
                D.requires_grad_(False)
                l_adv = F.softplus(-logit(d(gen, y, *fake_m))).mean()
                D.requires_grad_(True)
                l_feat = (c(gen) - want).square().flatten(1).sum(1).mean()
                l_img = (gen - x).square().flatten(1).sum(1).mean() * 255.0 ** 2
                total = 0.01 * l_feat + 2e-6 * l_img + 100.0 * l_adv
                terms = [t.item() for t in (l_feat, l_img, l_adv, l_discr, total)]
                if not all(map(math.isfinite, terms)):
                    raise RuntimeError(f"a term is not finite: {terms}")
                total.backward()
                opt_g.step()
                # The pause rule (deepsim_losses::DiscriminatorPause): update unless
                # L_discr / L_adv < 0.1; always when L_adv is 0.
                l_discr_v, l_adv_v = terms[3], terms[2]
                if l_adv_v <= 0 or l_discr_v / l_adv_v >= 0.1:
                    l_discr.backward()
                    opt_d.step()
                    counts["d_updates"] += 1
                counts["steps"] += 1

            run.counts = counts
            run.no_flops = compiled
            return run
        return setup

    for spec, res in ((DEEPSIM_FULL, 256), (DEEPSIM_64, 64)):
        for compiled in (False, True):
            suffix = "_compiled" if compiled else ""
            B.append((f"deepsim_train_step_b8_{res}{suffix}",
                      "deepsim train step (paper's settings): E + G + D + all terms + fused Adam for G and D"
                      + (", torch.compile on every module" if compiled else ""),
                      train_step_setup(spec, res, 8, compiled)))
    return B


def matmul_benchmarks(warmup, iters, threads):
    res = []
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for nt in sorted({1, threads}):
            torch.set_num_threads(nt)
            ts = time_it(lambda: torch.mm(a, b), warmup, iters)
            med = statistics.median(ts)
            res.append({"name": f"torch_mm_{n}_t{nt}", "n": n, "threads": nt, "median_ms": med * 1e3,
                        "min_ms": min(ts) * 1e3, "gflops": 2 * n ** 3 / med / 1e9,
                        "gflops_best": 2 * n ** 3 / min(ts) / 1e9})
        torch.set_num_threads(threads)
        an, bn = a.numpy(), b.numpy()
        ts = time_it(lambda: an @ bn, warmup, iters)
        med = statistics.median(ts)
        res.append({"name": f"numpy_openblas_{n}", "n": n, "threads": "default", "median_ms": med * 1e3,
                    "min_ms": min(ts) * 1e3, "gflops": 2 * n ** 3 / med / 1e9,
                    "gflops_best": 2 * n ** 3 / min(ts) / 1e9})
    return res


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated substrings of benchmark names")
    ap.add_argument("--exact", action="store_true", help="--only names whole benchmark names, not substrings")
    ap.add_argument("--rss", action="store_true",
                    help="report the process's peak resident set (ru_maxrss) after each benchmark; "
                         "run one benchmark per process (--only NAME --exact) for its own peak")
    ap.add_argument("--no-matmul", action="store_true")
    ap.add_argument("--out", default="torch_results.json")
    ap.add_argument("--fma-peak", type=float, default=None, help="override the FMA peak GFLOP/s used for ratios")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the benchmarks' models and inputs "
                    "live (torch.mm/numpy stay on the CPU); on CUDA the timer synchronizes after each call")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = lscpu_info()
    meta = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": np.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(), "threads": torch.get_num_threads(),
        "iters": args.iters, "warmup": args.warmup, "cpu": cpu, "device": str(DEVICE),
        "device_name": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        import lpips
        meta["lpips"] = getattr(lpips, "__version__", "0.1.4?")
    except ImportError:
        pass
    print(f"torch {torch.__version__}  torchvision {torchvision.__version__}  threads {args.threads}  "
          f"cpu {cpu['model_name']} fam {cpu['family']} avx512f={cpu['avx512f']}", flush=True)

    fma = fma_microbench()
    meta["fma_microbench_gflops"] = fma
    if fma:
        print("FMA microbench (GFLOP/s):", fma, flush=True)

    meta["fma_probe_before_matmul"] = fma_probe()
    mm = [] if args.no_matmul else matmul_benchmarks(args.warmup, args.iters, args.threads)
    meta["fma_probe_after_matmul"] = fma_probe()
    print(f"  fma probe before/after matmul: {meta['fma_probe_before_matmul']}/{meta['fma_probe_after_matmul']}")
    torch.set_num_threads(args.threads)
    for r in mm:
        print(f"  {r['name']:<24} {r['median_ms']:9.2f} ms  {r['gflops']:7.1f} GFLOP/s "
              f"(best {r['gflops_best']:.1f})", flush=True)
    torch_mm_t = [r["gflops"] for r in mm if r["name"].startswith("torch_mm") and r["threads"] == args.threads]
    practical_peak = max(torch_mm_t) if torch_mm_t else None
    fma_peak = max(fma.values()) if fma else None
    if fma:
        meta["effective_clock_ghz_from_fma_t1"] = round(fma.get("AVX512-zmm_t1", 0) / cpu["fp32_flop_per_cycle_per_core_assumed"], 2)

    only = [s for s in args.only.split(",") if s]
    results = []
    for name, desc, setup in make_benchmarks():
        if only and not any((s == name) if args.exact else (s in name) for s in only):
            continue
        run = setup()
        flops = 0 if getattr(run, "no_flops", False) else count_flops(run)
        p0 = fma_probe()
        ts = time_it(run, args.warmup, args.iters)
        p1 = fma_probe()
        med = statistics.median(ts)
        r = {"name": name, "desc": desc, "median_ms": med * 1e3, "min_ms": min(ts) * 1e3,
             "samples_ms": [t * 1e3 for t in ts], "flops": flops,
             "gflops_achieved": flops / med / 1e9 if flops else 0.0,
             "fma_probe_before": p0, "fma_probe_after": p1}
        if getattr(run, "counts", None):
            r["counts"] = dict(run.counts)
        # ru_maxrss is in KiB on Linux: the peak of the whole process so far.
        r["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        results.append(r)
        print(f"  {name:<36} {r['median_ms']:9.1f} ms  (min {r['min_ms']:8.1f})  "
              f"{flops / 1e9:8.2f} GFLOP  {r['gflops_achieved']:6.1f} GFLOP/s  fma-probe {p0}/{p1}", flush=True)
        if args.rss:
            print(f"  peak RSS {name} {r['peak_rss_bytes'] / 2 ** 20:.0f} MiB"
                  + (f" (process peak over {len(results)} benchmarks)" if len(results) > 1 else ""), flush=True)
        if "counts" in r:
            print(f"  counts {name} {r['counts']}", flush=True)
        del run

    # FMA peak = best all-CPU FMA throughput seen (start-up microbench or any probe); a benchmark
    # whose probe before or after fell below 80 % of it ran while the host was taking CPU away.
    probes = [v for r in results for v in (r["fma_probe_before"], r["fma_probe_after"]) if v]
    probes += [v for v in (meta.get("fma_probe_before_matmul"), meta.get("fma_probe_after_matmul")) if v]
    fma_peak = args.fma_peak or max([fma_peak or 0] + probes) or None
    for r in results:
        flops = r["flops"]
        if fma_peak and r["fma_probe_before"] and r["fma_probe_after"] and \
                min(r["fma_probe_before"], r["fma_probe_after"]) < 0.8 * fma_peak:
            r["contended"] = True
        if practical_peak and flops:
            r["frac_of_torch_mm_peak"] = r["gflops_achieved"] / practical_peak
        if fma_peak and flops:
            r["frac_of_fma_peak"] = r["gflops_achieved"] / fma_peak
        if cpu["theoretical_peak_gflops_all_cpus_at_nominal"] and flops:
            r["frac_of_theoretical_nominal"] = r["gflops_achieved"] / cpu["theoretical_peak_gflops_all_cpus_at_nominal"]

    # static FLOP counts per image (forward), for reference
    static = {}
    for nm, fn, hw in (("alexnet_tv_conv1-5_227", lambda: alexnet_tv(), 227),
                       ("alexnet_tv_conv1-5_224", lambda: alexnet_tv(), 224),
                       ("alexnet_tv_conv1-5_64", lambda: alexnet_tv(), 64),
                       ("caffenet_conv1-5_227", caffenet_features, 227),
                       ("vgg16_conv1_1-relu5_3_224", vgg16_relu5_3, 224)):
        m = frozen(fn())
        x = torch.randn(1, 3, hw, hw)
        with torch.no_grad():
            static[nm] = count_flops(lambda: m(x))
    for nm, spec in (("deepsim_generator_256", DEEPSIM_FULL), ("deepsim_generator_64", DEEPSIM_64)):
        g = DeePSiMGenerator(spec).eval()
        with torch.no_grad():
            static[nm] = count_flops(lambda: g(torch.randn(1, 4096)))
        static[nm + "_params"] = sum(p.numel() for p in g.parameters())

    # table
    print("\n=== summary (median of %d after %d warm-ups, %d threads) ===" % (args.iters, args.warmup, args.threads))
    print(f"practical peak (torch.mm, {args.threads} thr): {practical_peak and round(practical_peak, 1)} GFLOP/s; "
          f"FMA microbench peak: {fma_peak}; theoretical@nominal: {cpu['theoretical_peak_gflops_all_cpus_at_nominal']}")
    hdr = f"{'benchmark':<36} {'ms':>9} {'GFLOP':>8} {'GFLOP/s':>8} {'/mm':>6} {'/fma':>6} {'/theo':>6}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(f"{r['name']:<36} {r['median_ms']:9.1f} {r['flops'] / 1e9:8.2f} {r['gflops_achieved']:8.1f} "
              f"{r.get('frac_of_torch_mm_peak', 0):6.2f} {r.get('frac_of_fma_peak', 0):6.2f} "
              f"{r.get('frac_of_theoretical_nominal', 0):6.2f}" + ("  contended" if r.get("contended") else ""))
    print("\nforward FLOPs per image:")
    for k, v in static.items():
        print(f"  {k:<36} {v / 1e9:.4f} G" if not k.endswith("_params") else f"  {k:<36} {v / 1e6:.2f} M params")

    out = {"meta": meta, "matmul": mm, "practical_peak_gflops_torch_mm": practical_peak,
           "fma_peak_gflops": fma_peak, "benchmarks": results, "static_forward_flops_per_image": static}
    # merge with an existing file when running a subset (--only), so partial reruns accumulate
    if only and os.path.exists(args.out):
        try:
            with open(args.out) as f:
                old = json.load(f)
            names = {r["name"] for r in results}
            out["benchmarks"] = [r for r in old.get("benchmarks", []) if r["name"] not in names] + results
        except (OSError, ValueError):
            pass
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
