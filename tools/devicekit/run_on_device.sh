#!/usr/bin/env bash
# The one device command (see DEVICE.md): unpacks the runner carried in tools/devicekit/out, runs it on CUDA, runs
# the PyTorch + PEFT baseline on the same model folders, and prints the joined table last. Everything under $OUT:
# engine.log, torch.log, engine.json, torch.json, table.md, env.txt. Budget: runner 300 s, torch 150 s (+ 60 s grace).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/devicekit-out}
mkdir -p "$OUT"
KIT=tools/devicekit/out/runner.tar.gz
RUNNER=/tmp/pe-runner
WORK=/tmp/pe-devicekit
{ date -u; uname -a; nvidia-smi 2>&1 | head -20; ldconfig -p | grep -E "libcuda\.so" ; } > "$OUT/env.txt" 2>&1
[[ -f $KIT ]] || { echo "no $KIT: run tools/devicekit/build.sh here and carry tools/devicekit/out" | tee "$OUT/table.md"; exit 2; }
mkdir -p "$RUNNER" "$WORK" && tar -xzf "$KIT" -C "$RUNNER"
# The driver's libraries may sit outside the loader's default path on these machines.
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
timeout 300 "$RUNNER/PromptEngine.DeviceRunner" --out "$OUT" --work "$WORK" "$@" 2>&1 | tee "$OUT/engine.log"
echo "runner exit: ${PIPESTATUS[0]}" | tee -a "$OUT/engine.log"
PYTHONUNBUFFERED=1 timeout 210 python3 tools/devicekit/torch_baseline.py --work "$WORK" --out "$OUT" --compile --budget 150 2>&1 | tee "$OUT/torch.log"
echo "torch exit: ${PIPESTATUS[0]}" | tee -a "$OUT/torch.log"
python3 tools/devicekit/report.py "$OUT"
