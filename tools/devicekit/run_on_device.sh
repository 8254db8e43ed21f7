#!/usr/bin/env bash
# The one device command (see DEVICE.md): unpacks the runner carried in tools/devicekit/out, runs it on CUDA, runs
# the PyTorch + PEFT baseline on the same model folders, and prints the joined table last. Everything under $OUT:
# engine.log, torch.log, engine.json, torch.json, table.md, env.txt. Budget: runner 190 s (its train shapes stop
# starting at 150 s), torch 120 s; each killed 10 s after its limit if it ignores the signal (timeout -k).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/devicekit-out}
mkdir -p "$OUT"
KIT=tools/devicekit/out/runner.tar.gz
RUNNER=/tmp/pe-runner
WORK=/tmp/pe-devicekit
RUNNER_SECONDS=${RUNNER_SECONDS:-190}
TORCH_SECONDS=${TORCH_SECONDS:-120}

# ILGPU P/Invokes "cuda", which .NET resolves as libcuda.so, never libcuda.so.1; driver-only machines ship just the
# latter. Link the real driver library (never a CUDA toolkit "stubs" copy, which loads and then fails every call) as
# libcuda.so in a folder of our own, first on LD_LIBRARY_PATH.
CUDA_LINK=/tmp/pe-libcuda
REAL=""
for candidate in $(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF}') \
                 /usr/local/nvidia/lib64/libcuda.so.1 /usr/local/nvidia/lib/libcuda.so.1 \
                 /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1; do
  if [[ -e $candidate && $candidate != *stubs* ]]; then REAL=$(readlink -f "$candidate"); break; fi
done
mkdir -p "$CUDA_LINK"
if [[ -n $REAL ]]; then ln -sf "$REAL" "$CUDA_LINK/libcuda.so"; ln -sf "$REAL" "$CUDA_LINK/libcuda.so.1"; fi
export LD_LIBRARY_PATH=$CUDA_LINK:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

{ date -u; uname -a; nvidia-smi 2>&1 | head -20; ldconfig -p | grep -E "libcuda\.so"; echo "libcuda.so.1 used: ${REAL:-none found}";
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
[[ -f $KIT ]] || { echo "no $KIT: run tools/devicekit/build.sh here and carry tools/devicekit/out" | tee "$OUT/table.md"; exit 2; }
mkdir -p "$RUNNER" "$WORK" && tar -xzf "$KIT" -C "$RUNNER"
# The PTX step is skipped here: it needs no GPU, and the kit's --cpu dry run ran it inside the same publish.
timeout -k 10 "$RUNNER_SECONDS" "$RUNNER/PromptEngine.DeviceRunner" --out "$OUT" --work "$WORK" --skip ptx --budget 150 "$@" 2>&1 | tee "$OUT/engine.log"
echo "runner exit: ${PIPESTATUS[0]}" | tee -a "$OUT/engine.log"
PYTHONUNBUFFERED=1 timeout -k 10 "$TORCH_SECONDS" python3 tools/devicekit/torch_baseline.py --work "$WORK" --out "$OUT" --compile \
  --budget $((TORCH_SECONDS - 15)) 2>&1 | tee "$OUT/torch.log"
echo "torch exit: ${PIPESTATUS[0]}" | tee -a "$OUT/torch.log"
python3 tools/devicekit/report.py "$OUT"
