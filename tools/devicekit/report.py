#!/usr/bin/env python3
"""Joins engine.json (device runner) and torch.json (torch_baseline.py) into one Markdown table, printed last.

Usage: report.py OUT_DIR   (also writes OUT_DIR/table.md)
"""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        return {"errors": [f"{os.path.basename(path)}: {error}"]}


def number(value):
    """Rates print whole above a thousand and with four significant digits below (the CPU mode's are tiny)."""
    return f"{value:.0f}" if value >= 1000 else f"{value:.4g}"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", ".")
    engine = load(os.path.join(out, "engine.json"))
    torch = load(os.path.join(out, "torch.json"))
    lines = [f"Engine device: {engine.get('Device', '?')}",
             f"Torch: {torch.get('torch', '?')} on {torch.get('device', '?')}, peft {torch.get('peft', '?')}, transformers {torch.get('transformers', '?')}",
             ""]
    for plan in engine.get("Plans", []):
        lines.append(f"- memory plan: {plan}")
    for probe in engine.get("Probe", []):
        lines.append(f"- {probe}")
    checks = engine.get("Checks", [])
    failed = [c for c in checks if not c["Passed"]]
    lines.append(f"- kernel and engine checks: {len(checks) - len(failed)}/{len(checks)} passed"
                 + (f"; FAILED: {', '.join(c['Name'] + ' (rel ' + format(c['RelativeError'], '.1e') + ')' for c in failed)}" if failed else ""))
    worst = max((c for c in checks if c["Tolerance"] > 0), key=lambda c: c["RelativeError"] / c["Tolerance"], default=None)
    if worst:
        lines.append(f"- closest to its tolerance: {worst['Name']} rel {worst['RelativeError']:.2e} (tol {worst['Tolerance']:.0e})")
    lines.append("")
    lines.append("| measurement | engine | torch fp32 eager | torch bf16 autocast | torch fp32 compile | engine / torch fp32 eager |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    torch_train = {(t["model"], t["variant"]): t for t in torch.get("train", [])}
    for run in engine.get("Train", []):
        model = run["Model"]
        cells = []
        for variant in ("fp32 eager", "bf16 autocast", "fp32 compile"):
            t = torch_train.get((model, variant))
            cells.append(number(t['tokens_per_second']) if t else "–")
        eager = torch_train.get((model, "fp32 eager"))
        ratio = f"{run['TokensPerSecond'] / eager['tokens_per_second']:.2f}×" if eager else "–"
        weights = run.get("Weights", "F32")
        lines.append(f"| {model} train step tokens/s (B{run['Batch']} T{run['Length']}, prompt {run['PromptRows']}, engine {weights} weights, "
                     f"{run['DeviceBytes'] / 1e9:.1f} GB) | {number(run['TokensPerSecond'])} | {' | '.join(cells)} | {ratio} |")
        # Generated shapes: the engine's weights are its own, PyTorch's its own random init; losses do not compare.
        if eager and not run.get("Generated", False):
            lines.append(f"| {model} first loss (same weights, tokens, prompt) | {run['FirstLoss']:.5f} | {eager['first_loss']:.5f} | | | "
                         f"Δ {abs(run['FirstLoss'] - eager['first_loss']):.1e} |")
    engine_models = {run["Model"] for run in engine.get("Train", [])}
    for t in torch.get("train", []):
        if t["model"] not in engine_models:
            lines.append(f"| {t['model']} train step tokens/s (torch only: the engine did not run it) | – | {t['variant']}: {number(t['tokens_per_second'])} | | | |")
    torch_matmul = {(m["n"], m["k"], m["m"], m["precision"]): m for m in torch.get("matmul", [])}
    for mm in engine.get("Matmul", []):
        key = (mm["N"], mm["K"], mm["M"])
        fp32 = torch_matmul.get(key + ("fp32",))
        same = torch_matmul.get(key + ("fp32" if mm["Weights"] == "f32" else "bf16",))
        cells = [number(fp32['gflops']) if fp32 else "–",
                 f"{torch_matmul[key + ('bf16',)]['gflops']:.0f} (bf16 matmul)" if key + ("bf16",) in torch_matmul else "–",
                 f"{torch_matmul[key + ('tf32',)]['gflops']:.0f} (tf32)" if key + ("tf32",) in torch_matmul else "–"]
        ratio = f"{mm['Gflops'] / same['gflops']:.3f}× vs {same['precision']}" if same else "–"
        lines.append(f"| Linear GFLOP/s {mm['N']}x{mm['K']}x{mm['M']}, {mm['Weights']} weights | {number(mm['Gflops'])} | {' | '.join(cells)} | {ratio} |")
    errors = engine.get("Errors", []) + torch.get("errors", [])
    if errors:
        lines.append("")
        lines.extend(f"- error: {e}" for e in errors)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
