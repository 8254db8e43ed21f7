#!/usr/bin/env python3
"""PyTorch + PEFT prompt-tuning baseline for the device kit.

Reads the model folders the device runner wrote (config.json, model.safetensors, batch.json, prompt.f32), trains
PEFT prompt tuning (the same prompt rows, tokens and AdamW at lr 1e-3) eagerly in float32 with TF32 off (the engine's
precision), optionally under torch.compile and under bf16 autocast, and times torch.matmul at the runner's matmul
shapes. Writes torch.json into the output folder; report.py joins it with the engine's engine.json.

Usage: torch_baseline.py --work DIR --out DIR [--compile] [--budget SECONDS]
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback


def log(message):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {message}", flush=True)


def load_model(folder, torch, dtype):
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype, attn_implementation="sdpa")
    return model.cuda()


def train_variant(folder, variant, torch, repeats):
    """Times PEFT prompt-tuning steps; returns a dict with ms per step, tokens/s, the first loss and peak memory."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    batch = json.load(open(os.path.join(folder, "batch.json")))
    prompt_rows = batch["prompt_rows"]
    input_ids = torch.tensor(batch["input_ids"], dtype=torch.long, device="cuda")
    rows, tokens = input_ids.shape
    model = load_model(folder, torch, torch.float32)
    hidden = model.config.hidden_size
    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=prompt_rows,
                                                          prompt_tuning_init=PromptTuningInit.RANDOM))
    with open(os.path.join(folder, "prompt.f32"), "rb") as f:
        prompt = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(prompt_rows, hidden)
    embedding = peft_model.prompt_encoder["default"].embedding
    with torch.no_grad():
        embedding.weight.copy_(prompt.to(embedding.weight.device))
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def loss_of():
        if variant == "bf16 autocast":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return peft_model(input_ids=input_ids, labels=input_ids).loss
        return peft_model(input_ids=input_ids, labels=input_ids).loss

    step_fn = loss_of
    if variant == "fp32 compile":
        step_fn = torch.compile(loss_of)

    def step():
        loss = step_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    first = step().item()  # warm-up (and compilation); the loss before any update, comparable to the engine's
    step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    ms = statistics.median(times)
    positions = rows * (tokens + prompt_rows)
    result = {"variant": variant, "batch": rows, "length": tokens + prompt_rows, "prompt_rows": prompt_rows,
              "step_ms": ms, "tokens_per_second": positions / (ms / 1000), "first_loss": first,
              "peak_bytes": torch.cuda.max_memory_allocated()}
    del peft_model, model, optimizer
    torch.cuda.empty_cache()
    return result


def time_matmul(torch, n, k, m, precision):
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(n, k, device="cuda", dtype=torch.float32, generator=generator).mul_(2).sub_(1).to(dtype)
    w = torch.rand(m, k, device="cuda", dtype=torch.float32, generator=generator).mul_(2).sub_(1).to(dtype)
    for _ in range(3):
        torch.matmul(x, w.t())
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(x, w.t())
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"n": n, "k": k, "m": m, "precision": precision, "ms": ms, "gflops": 2.0 * n * k * m / (ms * 1e6)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds; later variants are skipped past it")
    args = parser.parse_args()
    began = time.time()
    import torch
    results = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "train": [], "matmul": [], "errors": []}
    try:
        import peft, transformers
        results["peft"], results["transformers"] = peft.__version__, transformers.__version__
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        results["errors"].append(f"import: {error!r}")
    log(f"torch {torch.__version__} on {results['device']}; peft {results.get('peft')}, transformers {results.get('transformers')}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    # Every model's eager run first: torch.compile's compilation time must not cost the eager baseline its budget.
    variants = ["fp32 eager", "bf16 autocast"] + (["fp32 compile"] if args.compile else [])
    for variant in variants:
        for name, repeats in (("stories15M", 5), ("gpt2-124M", 3)):
            folder = os.path.join(args.work, name)
            if not os.path.exists(os.path.join(folder, "batch.json")):
                if variant == variants[0]:
                    results["errors"].append(f"{name}: no batch.json in {folder} (did the runner's train step run?)")
                continue
            if time.time() - began > args.budget:
                results["errors"].append(f"{name} {variant}: skipped, past the {args.budget:.0f} s budget")
                continue
            try:
                started = time.time()
                result = train_variant(folder, variant, torch, repeats)
                result["model"] = name
                results["train"].append(result)
                log(f"{name} {variant}: first loss {result['first_loss']:.5f}, step {result['step_ms']:.1f} ms = "
                    f"{result['tokens_per_second']:.0f} tokens/s (peak {result['peak_bytes'] / 1e9:.2f} GB; {time.time() - started:.0f} s)")
            except Exception as error:  # noqa: BLE001 - one variant failing must not lose the others
                results["errors"].append(f"{name} {variant}: {error!r}")
                traceback.print_exc()

    for n, k, m in ((4096, 4096, 4096), (4096, 768, 3072)):
        for precision in ("fp32", "tf32", "bf16"):
            try:
                result = time_matmul(torch, n, k, m, precision)
                results["matmul"].append(result)
                log(f"torch.matmul {n}x{k}x{m} {precision}: {result['ms']:.3f} ms = {result['gflops']:.0f} GFLOP/s")
            except Exception as error:  # noqa: BLE001
                results["errors"].append(f"matmul {n}x{k}x{m} {precision}: {error!r}")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "torch.json"), "w") as f:
        json.dump(results, f, indent=2)
    log(f"wrote {os.path.join(args.out, 'torch.json')} after {time.time() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
