#!/usr/bin/env python3
"""PyTorch + PEFT prompt-tuning baseline for the device kit.

Reads the folders the device runner wrote before its CUDA probe (shapes.json; per shape config.json, batch.json,
prompt.f32, and model.safetensors unless the engine generates that shape's weights on the device), times
torch.matmul at the runner's matmul shapes first, then trains PEFT prompt tuning (the same prompt rows, tokens and
AdamW at lr 1e-3) eagerly in float32 with TF32 off (the engine's precision) on every shape, then under bf16 autocast,
then under torch.compile while the budget allows. Writes torch.json into the output folder after every result;
report.py joins it with the engine's engine.json.

Labels: PEFT prepends P labels of -100 and Hugging Face shifts labels by one, so with labels = input_ids the last
virtual token would be scored on input_ids[0], which the engine's batch does not score; labels[:, 0] = -100 makes
the two losses the same sum over the same positions (PeftLabellingTests checks that on the CPU).

Shapes whose weights are generated on the device ("generated" in batch.json) are built here from their config with
PyTorch's own random initialisation, directly on the GPU: their speed and memory compare, their first loss does not.

Usage: torch_baseline.py --work DIR --out DIR [--compile] [--budget SECONDS]
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback

# The device machine has no network: never let the Hub client try (and wait on) one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

COMPILE_RESERVE_SECONDS = 90  # a cold torch.compile of a small model; not started with less budget than this left


def log(message):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {message}", flush=True)


def peft_labels(input_ids):
    """labels for PEFT prompt tuning that score what the engine scores: token i predicts token i + 1 (see above)."""
    labels = input_ids.clone()
    labels[:, 0] = -100
    return labels


def load_model(folder, torch, dtype, generated):
    from transformers import AutoConfig, AutoModelForCausalLM
    if generated:
        config = AutoConfig.from_pretrained(folder)
        torch.manual_seed(0)
        with torch.device("cuda"):  # initialise on the GPU: a 7B model's CPU init alone would eat the budget
            # Keyword spellings differ across transformers versions (dtype since 4.56, torch_dtype before); the last
            # resort builds with the defaults and casts.
            for kwargs in ({"dtype": dtype, "attn_implementation": "sdpa"}, {"torch_dtype": dtype, "attn_implementation": "sdpa"}, {}):
                try:
                    return AutoModelForCausalLM.from_config(config, **kwargs).to(dtype)
                except TypeError as error:
                    log(f"from_config({', '.join(kwargs)}) refused: {error}")
            raise RuntimeError("AutoModelForCausalLM.from_config refused every keyword spelling")
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
    generated = bool(batch.get("generated", False))
    input_ids = torch.tensor(batch["input_ids"], dtype=torch.long, device="cuda")
    labels = peft_labels(input_ids)
    rows, tokens = input_ids.shape
    torch.cuda.reset_peak_memory_stats()
    model = load_model(folder, torch, torch.float32, generated)
    hidden = model.config.hidden_size
    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=prompt_rows,
                                                          prompt_tuning_init=PromptTuningInit.RANDOM))
    with open(os.path.join(folder, "prompt.f32"), "rb") as f:
        prompt = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(prompt_rows, hidden)
    embedding = peft_model.prompt_encoder["default"].embedding
    with torch.no_grad():
        embedding.weight.copy_(prompt.to(embedding.weight.device, embedding.weight.dtype))
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def loss_of():
        if variant == "bf16 autocast":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return peft_model(input_ids=input_ids, labels=labels).loss
        return peft_model(input_ids=input_ids, labels=labels).loss

    step_fn = torch.compile(loss_of) if variant == "fp32 compile" else loss_of

    def step():
        loss = step_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    first = step().item()  # warm-up (and compilation); the loss before any update, comparable to the engine's
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
              "generated": generated, "peak_bytes": torch.cuda.max_memory_allocated()}
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


def shapes_in(work):
    """(name, repeats) of each train shape, cheapest first, as the runner listed them."""
    try:
        with open(os.path.join(work, "shapes.json")) as f:
            return [(s["name"], s["repeats"]) for s in json.load(f)]
    except (OSError, ValueError, KeyError):
        return []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds; later runs are skipped past it")
    args = parser.parse_args()
    began = time.time()
    os.makedirs(args.out, exist_ok=True)
    results = {"torch": "?", "device": "?", "train": [], "matmul": [], "errors": []}

    def save():
        with open(os.path.join(args.out, "torch.json"), "w") as f:
            json.dump(results, f, indent=2)

    def left():
        return args.budget - (time.time() - began)

    import torch
    results["torch"] = torch.__version__
    results["device"] = torch.cuda.get_device_name(0)
    try:
        import peft, transformers
        results["peft"], results["transformers"] = peft.__version__, transformers.__version__
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        results["errors"].append(f"import: {error!r}")
    log(f"torch {torch.__version__} on {results['device']}; peft {results.get('peft')}, transformers {results.get('transformers')}")
    save()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    # Matmuls first: seconds each, and the bar the engine's Linear is measured against.
    for n, k, m in ((4096, 4096, 4096), (4096, 768, 3072)):
        for precision in ("fp32", "tf32", "bf16"):
            try:
                result = time_matmul(torch, n, k, m, precision)
                results["matmul"].append(result)
                log(f"torch.matmul {n}x{k}x{m} {precision}: {result['ms']:.3f} ms = {result['gflops']:.0f} GFLOP/s")
            except Exception as error:  # noqa: BLE001
                results["errors"].append(f"matmul {n}x{k}x{m} {precision}: {error!r}")
            save()

    shapes = shapes_in(args.work)
    if not shapes:
        results["errors"].append(f"no shapes.json in {args.work} (did the runner start?)")
    # Every shape's eager run first: torch.compile's compilation time must not cost the eager baselines their budget.
    variants = ["fp32 eager", "bf16 autocast"] + (["fp32 compile"] if args.compile else [])
    for variant in variants:
        for name, repeats in shapes:
            folder = os.path.join(args.work, name)
            if not os.path.exists(os.path.join(folder, "batch.json")):
                if variant == variants[0]:
                    results["errors"].append(f"{name}: no batch.json in {folder}")
                continue
            needed = COMPILE_RESERVE_SECONDS if variant == "fp32 compile" else 0
            if left() <= needed:
                results["errors"].append(f"{name} {variant}: skipped, {max(left(), 0):.0f} s of the {args.budget:.0f} s budget left")
                save()
                continue
            try:
                started = time.time()
                result = train_variant(folder, variant, torch, max(2, repeats))
                result["model"] = name
                results["train"].append(result)
                log(f"{name} {variant}: first loss {result['first_loss']:.5f}, step {result['step_ms']:.1f} ms = "
                    f"{result['tokens_per_second']:.0f} tokens/s (peak {result['peak_bytes'] / 1e9:.2f} GB; {time.time() - started:.0f} s)")
            except Exception as error:  # noqa: BLE001 - one variant failing must not lose the others
                results["errors"].append(f"{name} {variant}: {error!r}")
                traceback.print_exc()
                torch.cuda.empty_cache()
            save()

    save()
    log(f"wrote {os.path.join(args.out, 'torch.json')} after {time.time() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
