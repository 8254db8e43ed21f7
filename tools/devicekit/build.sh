#!/usr/bin/env bash
# Builds the device kit: a self-contained linux-x64 publish of PromptEngine.DeviceRunner (the GPU machine has no
# dotnet), packed as tools/devicekit/out/runner.tar.gz, plus the size report. The device call then carries
# tools/devicekit/out (ignored by git) and runs tools/devicekit/run_on_device.sh; see DEVICE.md.
# Usage: tools/devicekit/build.sh [--trim]   (--trim: IL trimming, smaller; checked by running --cpu on the result)
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=tools/devicekit/out
PUBLISH=$KIT/publish
rm -rf "$KIT" && mkdir -p "$PUBLISH"
TRIM=false
TRIM_FLAGS=()
if [[ "${1:-}" == "--trim" ]]; then
  # partial: only the framework's assemblies are trimmed; ILGPU (reflection, Reflection.Emit) and ours stay whole.
  # The engine's System.Text.Json reflection trips the trim analyzer, whose warnings the build treats as errors.
  TRIM=true
  TRIM_FLAGS=(-p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true -p:TreatWarningsAsErrors=false
              -p:JsonSerializerIsReflectionEnabledByDefault=true)
fi
dotnet publish benchmarks/PromptEngine.DeviceRunner -c Release -r linux-x64 --self-contained true \
  -p:PublishTrimmed=$TRIM "${TRIM_FLAGS[@]}" -p:DebugType=none -p:GenerateDocumentationFile=false \
  -o "$PUBLISH" 2>&1 | grep -Ev "^\s*$" | tail -5
tar -C "$PUBLISH" -czf "$KIT/runner.tar.gz" .
rm -rf "$PUBLISH"
SIZE=$(stat -c %s "$KIT/runner.tar.gz")
echo "runner.tar.gz: $((SIZE / 1024 / 1024)) MiB ($SIZE bytes), trimmed=$TRIM" | tee "$KIT/size.txt"
# What a device call carries is the working tree plus this folder; both together must stay under 64 MiB.
if (( SIZE > 48 * 1024 * 1024 )); then echo "kit too large for the 64 MiB carry limit" >&2; exit 1; fi
