#!/usr/bin/env bash
# Runs the pack of `cargo xtask gpu-pack` (target/gpu-pack/deepsim-gpu.tar.xz) on the GPU
# machine, which has the NVIDIA driver and PyTorch with its NVIDIA libraries but no Rust:
#
#     bash scripts/gpu-run.sh            # everything (under 10 minutes)
#     bash scripts/gpu-run.sh --check    # unpack, find the libraries, start the binaries, stop
#
# Parts, each with its own time limit, none stopping the others: the environment (GPU,
# driver, libraries), the device tests (DEEPSIM_TEST_DEVICE=cuda: our kernels and the
# generator step against the CPU), `deepsim bench --device cuda` for every benchmark (with the
# process's peak GPU memory from nvidia-smi), and the PyTorch twins of bench/torch/bench_torch.py
# on the same GPU. Everything lands in $OUT (default target/gpu-run): logs/, bench/*.json,
# torch/torch_results.json and summary.json, which names each part's exit status and time.
set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."

mode=all
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
out="$(realpath -m "${OUT:-target/gpu-run}")"
pack="$PWD/target/gpu-pack/deepsim-gpu.tar.xz"
mkdir -p "$out/logs" "$out/bench" "$out/torch"
: >"$out/parts.tsv"
started=$(date +%s)
budget=${GPU_RUN_BUDGET_S:-540}   # the device command's limit is 600 s

# part NAME LIMIT_S COMMAND...: runs the command with its output in logs/NAME.log, records
# its exit status (124: timed out) and seconds, and never fails.
part() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - ($(date +%s) - started)))
  if ((left < 15)); then
    printf '%s\tskipped\t0\n' "$name" >>"$out/parts.tsv"
    echo "[$name] skipped: the time budget is spent"
    return 0
  fi
  ((limit > left)) && limit=$left
  local t0 rc
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >"$out/logs/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((($(date +%s%N) - t0) / 1000000))" >>"$out/parts.tsv"
  echo "[$name] exit $rc after $((($(date +%s%N) - t0) / 1000000)) ms; last lines:"
  tail -n 4 "$out/logs/$name.log" | sed 's/^/    /'
  return 0
}

# --- unpack
work="$(mktemp -d "${TMPDIR:-/tmp}/deepsim-gpu.XXXXXX")"
if [[ ! -f "$pack" ]]; then
  echo "no pack at $pack: run cargo xtask gpu-pack on the build machine and carry target/gpu-pack" >&2
  python3 -c 'import json,sys; json.dump({"error": "no pack at " + sys.argv[1]}, open(sys.argv[2], "w"))' \
    "$pack" "$out/summary.json"
  exit 1
fi
if command -v xz >/dev/null; then
  tar -C "$work" -xJf "$pack"
else
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$pack" "$work"
fi
dir="$work/deepsim-gpu"
cp "$dir/manifest.json" "$out/manifest.json"
deepsim="$dir/bin/deepsim"

# --- libraries: PyTorch's NVIDIA wheels (cudart, cuBLAS, cuRAND, NVRTC), the driver's libcuda
nvidia_dirs="$(python3 - <<'EOF'
import glob, os
dirs = []
try:
    import nvidia  # a namespace package: no __file__, one or more __path__ entries
    for root in nvidia.__path__:
        dirs += sorted(glob.glob(os.path.join(root, "*", "lib")))
except ImportError:
    pass
print(":".join(d for d in dirs if os.path.isdir(d)))
EOF
)"
export LD_LIBRARY_PATH="${nvidia_dirs}${nvidia_dirs:+:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
driver=driver
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' &&
  ! compgen -G '/usr/lib*/libcuda.so.1' >/dev/null &&
  ! compgen -G '/usr/lib*/*/libcuda.so.1' >/dev/null &&
  ! compgen -G '/usr/local/nvidia/lib*/libcuda.so.1' >/dev/null; then
  # No NVIDIA driver: the pack's stub libcuda lets the binaries start and report no device.
  driver=stub
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$dir/stub"
fi
echo "libcuda: $driver; LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

part environment 60 bash -c '
  echo "== nvidia-smi"; nvidia-smi || true
  echo "== ldd deepsim"; ldd "$1"
  echo "== python"; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())" || true
  python3 -c "import torchvision; print(\"torchvision\", torchvision.__version__)" || true
  ! ldd "$1" | grep "not found"
' _ "$deepsim"
part starts 30 "$deepsim" bench --list
for t in "$dir"/tests/*; do
  part "list-$(basename "$t")" 30 "$t" --list
done
# Opens the CUDA device for one call, or says plainly why not (never a panic).
part cuda-device 60 bash -c '
  msg=$("$1" bench lrn_fwdbwd --device cuda --iterations 1 2>&1); rc=$?; echo "$msg"
  [[ $rc == 0 ]] || { [[ $msg == *"cannot be opened"* ]] && [[ $msg != *panicked* ]]; }
' _ "$deepsim"

if [[ $mode == all ]]; then
  for t in "$dir"/tests/*; do
    part "test-$(basename "$t")" 180 env DEEPSIM_TEST_DEVICE=cuda "$t"
  done

  # One process per benchmark, its GPU memory sampled every 200 ms.
  bench_one() {
    local name=$1 json=$2 peak=0 pid mib
    "$deepsim" bench "$name" --device cuda --iterations 20 --json "$json" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      mib=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null |
        awk -F', *' -v p="$pid" '$1 == p { s += $2 } END { print s + 0 }')
      ((mib > peak)) && peak=$mib
      sleep 0.2
    done
    wait "$pid"
    local rc=$?
    echo "peak GPU memory: $peak MiB"
    echo "$peak" >"${json%.json}.peak_mib"
    return $rc
  }
  export -f bench_one
  export deepsim
  for name in $("$deepsim" bench --list 2>/dev/null); do
    part "bench-$name" 120 bash -c 'bench_one "$1" "$2"' _ "$name" "$out/bench/$name.json"
  done

  # The PyTorch twins (no LPIPS: the lpips package is not part of the machine's PyTorch).
  part torch 240 python3 bench/torch/bench_torch.py --device cuda --no-matmul --iters 20 \
    --warmup 3 --only alexnet_tv,caffenet,vgg16,deepsim_ --out "$out/torch/torch_results.json"
fi

# --- summary.json: each part's status and time, test counts, the benchmarks' figures.
python3 - "$out" "$mode" "$driver" <<'EOF'
import glob, json, os, re, sys
out, mode, driver = sys.argv[1:4]
parts = []
for line in open(os.path.join(out, "parts.tsv")):
    name, rc, ms = line.rstrip("\n").split("\t")
    p = {"part": name, "exit": None if rc == "skipped" else int(rc), "ms": int(ms),
         "log": f"logs/{name}.log"}
    if rc == "skipped":
        p["skipped"] = True
    elif rc == "124":
        p["timed_out"] = True
    if name.startswith("test-"):
        text = open(os.path.join(out, p["log"]), errors="replace").read()
        m = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text)
        if m:
            p["passed"], p["failed"] = (sum(int(x[i]) for x in m) for i in (0, 1))
    parts.append(p)
bench = []
for f in sorted(glob.glob(os.path.join(out, "bench", "*.json"))):
    try:
        rows = json.load(open(f))
    except ValueError:
        continue
    peak = f[: -len(".json")] + ".peak_mib"
    for r in rows:
        r["peak_gpu_mib"] = int(open(peak).read()) if os.path.exists(peak) else None
        bench.append(r)
torch = None
tf = os.path.join(out, "torch", "torch_results.json")
if os.path.exists(tf):
    t = json.load(open(tf))
    torch = [{k: r[k] for k in ("name", "median_ms", "min_ms")} for r in t.get("benchmarks", [])]
summary = {"mode": mode, "libcuda": driver, "parts": parts, "deepsim_bench": bench,
           "torch_bench": torch}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
ok = sum(p["exit"] == 0 for p in parts)
print(f"{ok} of {len(parts)} parts succeeded; {out}/summary.json")
for r in bench:
    print(f"  deepsim {r['name']:<28} batch {r['batch']:>3} {r['median_ms']:9.2f} ms "
          f"{r['images_per_s']:9.1f} img/s  peak {r['peak_gpu_mib']} MiB")
for r in torch or []:
    print(f"  torch   {r['name']:<36} {r['median_ms']:9.2f} ms")
EOF
rm -rf "$work"
