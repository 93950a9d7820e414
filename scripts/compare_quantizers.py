"""deepsim quantize (CIELAB and sRGB palettes) against pngquant at K = 8, 16, 64, dithering off
and on, on colour photographs: mean ΔE2000 and ST-LPIPS-alex to the original (both measured by
deepsim), file size and time (median of --repeat runs). Prints the markdown table of
docs/APPLICATIONS.md.

    python3 scripts/compare_quantizers.py --deepsim target/release/deepsim \
        --pngquant /usr/bin/pngquant PHOTO.png ...

pngquant reads PNG only (convert JPEG photos first). It runs at its default speed (4) with --nofs for "dithering off"; deepsim's figures for
its output come from `deepsim compare`, so both quantizers are judged by the same code.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time


def timed(cmd, repeat, env=None):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out.stdout


def measure(deepsim, original, quantized):
    values = []
    for metric in ["delta-e2000", "stlpips-alex"]:
        out = subprocess.run([deepsim, "compare", "--metric", metric, original, quantized],
                             check=True, capture_output=True, text=True).stdout
        values.append(float(out.strip()))
    return values


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepsim", required=True)
    p.add_argument("--pngquant", required=True)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("photos", nargs="+")
    a = p.parse_args()
    rows = {}
    tmp = tempfile.mkdtemp(prefix="quantize-")
    for photo in a.photos:
        name = os.path.splitext(os.path.basename(photo))[0]
        for k in [8, 16, 64]:
            for dither in [False, True]:
                for method in ["deepsim lab", "deepsim rgb", "pngquant"]:
                    out = os.path.join(tmp, f"{name}-{k}-{dither}-{method.replace(' ', '-')}.png")
                    if method == "pngquant":
                        cmd = [a.pngquant, "--force", "--output", out, str(k), photo]
                        if not dither:
                            cmd.insert(1, "--nofs")
                        # --speed default (4); a separate exit code 99 means quality not met.
                        seconds, _ = timed(cmd, a.repeat)
                    else:
                        space = method.split()[1]
                        cmd = [a.deepsim, "quantize", photo, "--colors", str(k), "--space", space,
                               "--out", out, "--json", "--no-stlpips"]
                        if dither:
                            cmd.append("--dither")
                        seconds, _ = timed(cmd, a.repeat)
                    de, lp = measure(a.deepsim, photo, out)
                    key = (method, k, dither)
                    rows.setdefault(key, []).append((de, lp, os.path.getsize(out), seconds))
                    print(f"{name} K={k} dither={dither} {method}: ΔE {de:.3f} ST-LPIPS {lp:.4f} "
                          f"{os.path.getsize(out)} B {seconds:.3f} s", flush=True)
    print()
    print("| K | dithering | quantizer | mean ΔE2000 | ST-LPIPS-alex | size | time |")
    print("|---|---|---|---|---|---|---|")
    for (method, k, dither), vals in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        de = statistics.mean(v[0] for v in vals)
        lp = statistics.mean(v[1] for v in vals)
        size = statistics.mean(v[2] for v in vals) / 1024
        sec = statistics.mean(v[3] for v in vals)
        print(f"| {k} | {'on' if dither else 'off'} | {method} | {de:.3f} | {lp:.4f} | "
              f"{size:.0f} KiB | {sec:.2f} s |")
    print(json.dumps({f"{m} K={k} dither={d}": v for (m, k, d), v in rows.items()}))


if __name__ == "__main__":
    main()
