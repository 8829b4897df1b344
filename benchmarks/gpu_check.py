"""Full fine-tuning vs LoRA vs QLoRA on a ~1B-parameter Llama, for one GPU: tokens/s and peak CUDA
memory, with ratios against full fine-tuning. Plain torch + transformers + peft (+ bitsandbytes
for QLoRA); no hydra, no datasets, no pretrained weights.

    python benchmarks/gpu_check.py                # on a CUDA GPU (benchmarks/gpu_check.sh wraps it)
    python benchmarks/gpu_check.py --tiny         # a tiny Llama on the CPU: the same code path

The model is LlamaForCausalLM built from a config of Llama-3.2-1B's shape (hidden 2048, 16 layers,
32 heads / 8 key-value heads, intermediate 8192, vocab 128256, tied embeddings: 1,235,814,400
parameters) with random weights: speed and memory do not depend on the values, and the GPU machine
can neither download weights nor receive more than 64 MiB of files. bitsandbytes only quantizes
weights while loading, so QLoRA saves the random bf16 model to a temporary folder
(`save_pretrained`) and loads it back with a `BitsAndBytesConfig`.

What each contender trains (say it beside any number, or the memory cannot be read):
  full   every weight; bf16 weights and gradients, torch AdamW with its states in bf16 (pure bf16,
         no fp32 master copy): 2 + 2 + 4 = 8 bytes a parameter before activations.
  lora   LoRA r 16, alpha 32, no dropout (dropout copies every adapted input) on q, k, v, o, gate,
         up and down of every layer; the bf16 base frozen; adapters in fp32 (peft's default).
  qlora  the same LoRA on the base quantized at load time: NF4, double quantization, bf16 compute
         (Dettmers et al. 2023), other weights (embeddings, norms) kept in bf16 as in `lora`, so
         the base's storage is the only difference between the two.
No gradient checkpointing; the model's default attention (sdpa). `--tiny` runs a tiny Llama in
fp32 on the CPU (QLoRA with fp32 compute through bitsandbytes' CPU backend).

Each contender runs in its own process, so each peak is its own (torch.cuda.max_memory_allocated,
reset once the model and optimizer are ready; on the CPU the process's peak RSS, which counts
Python and its libraries too). Rounds alternate the contenders (full, lora, qlora, full, ...);
tokens/s is batch x sequence over the median step time of all timed steps. Each contender stops
after its steps or `--max-seconds`; no new process starts once `--budget-seconds` is spent, and the
table is rewritten after every process, so a run cut short still leaves what it measured.
Writes gpu_check.md and gpu_check.csv into `--out`.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

CONTENDERS = ("full", "lora", "qlora")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 16, 32
LEARNING_RATE = 1e-4  # the value does not change speed or memory; a plausible one all the same

LLAMA_3_2_1B_SHAPE = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=True,
)
TINY_SHAPE = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
# Sizes of a run, per mode: the GPU's fit an H200 in a few minutes, the tiny ones a test.
DEFAULTS = {
    "gpu": dict(batch_size=8, seq_len=512, warmup=3, steps=20, rounds=2, max_seconds=60.0, budget_seconds=420.0),
    "tiny": dict(batch_size=4, seq_len=64, warmup=1, steps=3, rounds=1, max_seconds=20.0, budget_seconds=150.0),
}
CSV_COLUMNS = [
    "contender", "status", "reason", "base_params", "trainable_params", "weights_mib", "peak_mib",
    "peak_vs_full", "tokens_per_s", "tokens_per_s_vs_full", "median_step_ms", "timed_steps",
    "round_tokens_per_s",
]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    tiny: bool
    contenders: tuple[str, ...]
    batch_size: int
    seq_len: int
    warmup: int
    steps: int
    rounds: int
    max_seconds: float
    budget_seconds: float
    out: Path

    @property
    def device(self) -> str:
        return "cpu" if self.tiny else "cuda"

    @property
    def shape(self) -> dict:
        return TINY_SHAPE if self.tiny else LLAMA_3_2_1B_SHAPE


def parse_settings(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama in fp32 on the CPU")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check"))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--warmup", type=int, help="untimed steps before the timed ones")
    parser.add_argument("--steps", type=int, help="timed steps per contender and round")
    parser.add_argument("--rounds", type=int, help="times each contender runs, alternating")
    parser.add_argument("--max-seconds", type=float, help="a contender's steps stop after this long")
    parser.add_argument("--budget-seconds", type=float, help="no new process starts after this long")
    # Internal: the parent starts one process per contender and round with these.
    parser.add_argument("--measure", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = dict(DEFAULTS["tiny" if args.tiny else "gpu"])
    sizes.update({key: getattr(args, key) for key in sizes if getattr(args, key) is not None})
    for key in ("batch_size", "seq_len", "steps", "rounds"):
        if sizes[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {sizes[key]}")
    if sizes["warmup"] < 0:
        parser.error(f"--warmup must be 0 or more, got {sizes['warmup']}")
    contenders = tuple(name for name in CONTENDERS if name in args.contenders)
    return Settings(tiny=args.tiny, contenders=contenders, out=args.out, **sizes), args


# ----- one contender, in its own process -----


def build_random_llama(settings: Settings, dtype):
    """LlamaForCausalLM from its config with random weights, created on the target device (the
    device context allocates and initialises there, not on the CPU first)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(**settings.shape, max_position_embeddings=max(2048, settings.seq_len))
    with torch.device(settings.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(settings.device)


def quantized_random_llama(settings: Settings, dtype):
    """The same random model with its linear layers in NF4 (double quantization, `dtype` compute):
    bitsandbytes quantizes only while loading, so the float model goes through a local folder."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        build_random_llama(settings, dtype).save_pretrained(folder)
        gc.collect()
        if settings.device == "cuda":
            torch.cuda.empty_cache()
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        # The device index, as transformers' own default for bitsandbytes on CUDA has it.
        device = torch.cuda.current_device() if settings.device == "cuda" else "cpu"
        return AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization, dtype=dtype, device_map={"": device}, use_safetensors=True
        )


def contender_model(name: str, settings: Settings):
    """The model as `name` trains it: every weight (full) or a frozen base with LoRA adapters."""
    import torch
    from peft import LoraConfig, get_peft_model

    dtype = torch.float32 if settings.tiny else torch.bfloat16
    if name == "full":
        return build_random_llama(settings, dtype)
    base = quantized_random_llama(settings, dtype) if name == "qlora" else build_random_llama(settings, dtype)
    lora = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    return get_peft_model(base, lora)


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed_steps(model, optimizer, settings: Settings) -> list[float]:
    """Seconds of each timed training step (forward, backward, optimizer step) on one synthetic
    batch of random token ids. At least one step is timed even past `max_seconds`, so that every
    finished contender has a number."""
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (settings.batch_size, settings.seq_len)
    input_ids = torch.randint(settings.shape["vocab_size"], shape, generator=generator).to(settings.device)
    model.train()
    started = time.perf_counter()
    seconds = []
    for step in range(settings.warmup + settings.steps):
        synchronize(settings.device)
        begin = time.perf_counter()
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(settings.device)
        if step >= settings.warmup:
            seconds.append(time.perf_counter() - begin)
        if seconds and time.perf_counter() - started > settings.max_seconds:
            break
    return seconds


def parameter_counts(model, is_peft: bool) -> dict:
    """The base's parameters (adapters left out) and the trainable ones. transformers' and peft's
    counters both count a 4-bit weight by its shape, not by its packed storage."""
    if is_peft:
        trainable, with_adapters = model.get_nb_trainable_parameters()
        return {"base_params": with_adapters - trainable, "trainable_params": trainable}
    return {"base_params": model.num_parameters(), "trainable_params": model.num_parameters(only_trainable=True)}


def stored_bytes(model) -> int:
    """Bytes of the parameters and buffers as stored: a 4-bit weight counts its packed bytes
    (bitsandbytes' per-block scales, about 3% more, are not parameters and are left out)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def environment(device: str) -> dict:
    """The device and the versions that produced a row (read from the installed metadata, so that
    nothing is imported for it)."""
    import torch

    if device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        device_name = f"CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return {
        "device": device_name,
        "torch": torch.__version__,
        **{name: installed_version(name) for name in ("transformers", "peft", "bitsandbytes")},
    }


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def measure(name: str, settings: Settings) -> dict:
    """Build `name`'s model and optimizer, then time its steps and take its peak memory."""
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is visible to torch: run on a GPU machine, or use --tiny for the CPU")
    model = contender_model(name, settings)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE)
    counts = {**parameter_counts(model, is_peft=name != "full"), "weights_bytes": stored_bytes(model)}
    if settings.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed_steps(model, optimizer, settings)
    if settings.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"status": "ok", **counts, "peak_bytes": peak, "step_seconds": seconds, **environment(settings.device)}


def measure_to_file(name: str, settings: Settings, result: Path) -> None:
    """Run in the child process: the parent reads `result`, also when the contender failed."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        measured = measure(name, settings)
    except Exception as error:
        result.write_text(json.dumps({"status": "failed", "reason": f"{type(error).__name__}: {error}"}))
        raise
    result.write_text(json.dumps(measured))
    tokens = settings.batch_size * settings.seq_len
    print(
        f"{name}: {len(measured['step_seconds'])} timed steps, "
        f"{tokens / statistics.median(measured['step_seconds']):,.0f} tokens/s, "
        f"peak {measured['peak_bytes'] / 2**20:,.0f} MiB",
        flush=True,
    )


# ----- the parent: one process per contender and round, then the table -----


def run_contender(name: str, argv: list[str], timeout: float) -> dict:
    """One contender in a fresh process, so that its peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_result_") as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--measure", name, "--result", str(result)]
        try:
            completed = subprocess.run(command, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"stopped by the budget after {timeout:.0f} s"}
        if result.exists():
            return json.loads(result.read_text())
        return {"status": "failed", "reason": f"the process ended with exit code {completed.returncode} and no result"}


def skip_reason(name: str) -> str | None:
    if name == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (for the GPU machine, fetch its wheel: benchmarks/fetch_gpu_wheels.sh)"
    return None


def summarize(name: str, runs: list[dict], settings: Settings) -> dict:
    """One row per contender over its rounds: the median step of all timed steps, the largest peak."""
    failed = [run for run in runs if run["status"] != "ok"]
    if failed or not runs:
        reason = failed[0]["reason"] if failed else "not run: the budget was spent before its turn"
        return {"contender": name, "status": "failed" if failed else "skipped", "reason": reason}
    tokens = settings.batch_size * settings.seq_len
    seconds = [second for run in runs for second in run["step_seconds"]]
    return {
        "contender": name,
        "status": "ok",
        "reason": "",
        "base_params": runs[0]["base_params"],
        "trainable_params": runs[0]["trainable_params"],
        "weights_mib": runs[0]["weights_bytes"] / 2**20,
        "peak_mib": max(run["peak_bytes"] for run in runs) / 2**20,
        "tokens_per_s": tokens / statistics.median(seconds),
        "median_step_ms": 1000 * statistics.median(seconds),
        "timed_steps": len(seconds),
        "round_tokens_per_s": " / ".join(f"{tokens / statistics.median(run['step_seconds']):.0f}" for run in runs),
    }


def with_ratios(rows: list[dict]) -> list[dict]:
    full = next((row for row in rows if row["contender"] == "full" and row["status"] == "ok"), None)
    for row in rows:
        if full and row["status"] == "ok":
            row["peak_vs_full"] = row["peak_mib"] / full["peak_mib"]
            row["tokens_per_s_vs_full"] = row["tokens_per_s"] / full["tokens_per_s"]
    return rows


def description(settings: Settings, parameters: int | None) -> list[str]:
    """What was run, in the words a reader needs to interpret the memory and the speed."""
    shape = settings.shape
    model = (
        f"LlamaForCausalLM from its config (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
        f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} key-value heads, "
        f"intermediate {shape['intermediate_size']}, vocab {shape['vocab_size']}, tied embeddings)"
        + (f", {parameters:,} parameters" if parameters else "")
        + (", fp32 on the CPU" if settings.tiny else ", bf16")
    )
    steps = (
        f"batch {settings.batch_size} x {settings.seq_len} tokens of random ids; {settings.warmup} warm-up + "
        f"{settings.steps} timed steps per contender and round (fewer past {settings.max_seconds:.0f} s), "
        f"{settings.rounds} round(s) alternating the contenders, each run in its own process"
    )
    memory = "peak RSS of the whole process (CPU)" if settings.tiny else "torch.cuda.max_memory_allocated in training"
    return [
        f"Model: {model}. Run: {steps}.",
        "",
        "full: every weight trains, torch AdamW with weights, gradients and optimizer states in the model's dtype "
        f"(no fp32 master copy). lora: r {LORA_R}, alpha {LORA_ALPHA}, no dropout, on {', '.join(LORA_TARGETS)}; "
        "frozen base, fp32 adapters. qlora: the same LoRA on an NF4 base (double quantization, compute in the "
        "model's dtype), saved with save_pretrained and reloaded with BitsAndBytesConfig. No gradient checkpointing.",
        "",
        f"peak MiB: {memory}. weights MiB: parameters and buffers as stored (4-bit packed, block scales not "
        "counted). tokens/s: batch x sequence over the median timed step.",
    ]


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| contender | status | trainable params | weights MiB | peak MiB | peak vs full "
        "| tokens/s | tokens/s vs full | median step ms | timed steps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['contender']} | {row['status']}: {row['reason']} | | | | | | | | |")
            continue
        lines.append(
            f"| {row['contender']} | ok | {row['trainable_params']:,} | {row['weights_mib']:,.1f} "
            f"| {row['peak_mib']:,.0f} | {row.get('peak_vs_full', float('nan')):.2f} | {row['tokens_per_s']:,.0f} "
            f"| {row.get('tokens_per_s_vs_full', float('nan')):.2f} | {row['median_step_ms']:.1f} "
            f"| {row['timed_steps']} |"
        )
    return lines


def markdown(rows: list[dict], env: dict, settings: Settings, command: str) -> str:
    parameters = next((row["base_params"] for row in rows if row["status"] == "ok"), None)
    versions = "torch {torch}, transformers {transformers}, peft {peft}, bitsandbytes {bitsandbytes}".format(**env)
    lines = [
        f"# Full fine-tuning vs LoRA vs QLoRA, Llama{' (tiny)' if settings.tiny else '-3.2-1B shape'}, random weights",
        "",
        f"Made by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d}.",
        "",
        f"device: {env['device']}; {versions}",
        "",
        *description(settings, parameters),
        "",
        *table(rows),
    ]
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict], env: dict, settings: Settings, command: str) -> None:
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "gpu_check.md").write_text(markdown(rows, env, settings, command))
    with (settings.out / "gpu_check.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def table_rows(runs: dict[str, list[dict]], settings: Settings) -> list[dict]:
    rows = [
        {"contender": name, "status": "skipped", "reason": skip_reason(name)} if skip_reason(name)
        else summarize(name, name_runs, settings)
        for name, name_runs in runs.items()
    ]  # fmt: skip
    return with_ratios(rows)


def compare(settings: Settings, argv: list[str]) -> int:
    """Every contender, `rounds` times, alternating; the table is rewritten after each process."""
    command = shlex.join(["python", "benchmarks/gpu_check.py", *argv])
    started = time.monotonic()
    runs: dict[str, list[dict]] = {name: [] for name in settings.contenders}
    env = {key: "?" for key in ("device", "torch", "transformers", "peft", "bitsandbytes")}
    for _ in range(settings.rounds):
        for name in settings.contenders:
            left = settings.budget_seconds - (time.monotonic() - started)
            if skip_reason(name) or left <= 0 or any(run["status"] != "ok" for run in runs[name]):
                continue
            run = run_contender(name, argv, timeout=left)
            runs[name].append(run)
            env = {key: run.get(key, value) for key, value in env.items()}
            write_outputs(table_rows(runs, settings), env, settings, command)
    write_outputs(table_rows(runs, settings), env, settings, command)
    print((settings.out / "gpu_check.md").read_text())
    return 1 if any(run["status"] != "ok" for name_runs in runs.values() for run in name_runs) else 0


def main(argv: list[str]) -> int:
    settings, args = parse_settings(argv)
    if args.measure:
        measure_to_file(args.measure, settings, args.result)
        return 0
    return compare(settings, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
