"""Where a decode step's time goes, per weight format: the why behind the decode targets.

    .venv/bin/python bench/decode_profile.py [--formats fp32,bf16,int8] [--steps 16] [--batches 1,8]

A decode step reads every weight of the model once, whatever the batch, so one
chat's speed is capped by (memory bandwidth) / (bytes of weights). This script
measures both sides on the machine at hand, in one run:

- the memory read bandwidth (the best of a few sums over a 1 GiB tensor, on
  torch's threads), and so the ceiling tokens/s of each format;
- each format's decode step (``DecodeBatch.feed``, the engine's own), for 1
  and 8 chats: ms per step, tokens/s, and the share of the step spent in
  matrix multiplication (torch.profiler, self time of the matmul kernels:
  ``addmm``, ``mm``, ``bmm``, quantized ``linear_dynamic``), in attention, and
  in everything else (the small ops between, and Python);
- the bytes of weights a step reads and the bandwidth that implies.

Each format runs in its own process (``--one``), one after another. The date,
the CPU and its flags head the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import REPO, cpu_flags_line, header

PROMPT = "Write a short story about a robot who learns to paint."
MATMUL = ("addmm", "aten::mm", "aten::bmm", "linear_dynamic", "int8pack", "mkldnn_linear", "_int_mm")
ATTENTION = ("scaled_dot_product", "flash_attention")


def read_bandwidth_gbs() -> float:
    """Memory read bandwidth in GB/s: the best of five sums over 1 GiB (far bigger than any cache)."""
    import torch

    data = torch.ones(256 * 2**20, dtype=torch.float32)
    data.sum()  # touch every page first
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best / 1e9


def weight_bytes(model) -> int:
    """Bytes of weights one decode step reads: every linear layer (int8 ones included), the norms,
    and the output layer; the embedding table only where it is not the output layer's own."""
    import torch

    from engine.int8 import Int8Linear

    total, seen = 0, set()
    for module in model.modules():
        if isinstance(module, Int8Linear):  # its int8 matrix; a tied fp32 ``weight`` is not read by it
            total += module.in_features * module.out_features
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or isinstance(module, torch.nn.Embedding):
            continue
        if weight.data_ptr() not in seen:
            seen.add(weight.data_ptr())
            total += weight.numel() * weight.element_size()
    return total


def profile_steps(backend, chats: int, steps: int) -> dict:
    """Time ``steps`` decode steps of ``chats`` sequences, then profile as many more."""
    from torch.profiler import ProfilerActivity, profile

    messages = [{"role": "user", "content": PROMPT}]
    prompt = backend.text.encode(backend.text.render(messages, add_generation_prompt=True))
    sequences = [backend.decoder.start(prompt, temperature=0.0, seed=0) for _ in range(chats)]

    def step() -> None:
        backend.decoder.step({s: backend.decoder.next_token(s) for s in sequences})

    step()  # warm-up: the first step of a batch allocates
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        profiled_wall_us = (time.perf_counter() - started) * 1e6
    for sequence in sequences:
        backend.decoder.release(sequence)
    shares = {"matmul": 0.0, "attention": 0.0}
    ops = []
    for event in prof.key_averages():
        name, self_us = event.key, event.self_cpu_time_total
        ops.append((self_us, name))
        if any(m in name for m in MATMUL):
            shares["matmul"] += self_us
        elif any(a in name for a in ATTENTION):
            shares["attention"] += self_us
    in_ops = sum(us for us, _ in ops)
    step_ms = statistics.median(times) * 1e3
    return {
        "chats": chats,
        "step_ms": round(step_ms, 1),
        "tokens_per_s": round(chats / step_ms * 1e3, 2),
        "matmul_share": round(shares["matmul"] / profiled_wall_us, 3),
        "attention_share": round(shares["attention"] / profiled_wall_us, 3),
        "other_ops_share": round((in_ops - shares["matmul"] - shares["attention"]) / profiled_wall_us, 3),
        "outside_ops_share": round(max(profiled_wall_us - in_ops, 0) / profiled_wall_us, 3),
        "top_ops": [f"{name} {us / profiled_wall_us:.0%}" for us, name in sorted(ops, reverse=True)[:5]],
    }


def measure(precision: str, steps: int, batches: list[int]) -> dict:
    from engine.backends import open_backend

    backend = open_backend("torch", REPO / "models" / "current", precision=precision)
    result = {"format": backend.info.precision, "weight_bytes": weight_bytes(backend.handle.model),
              "bandwidth_gbs": round(read_bandwidth_gbs(), 1), "runs": []}
    for chats in batches:
        result["runs"].append(profile_steps(backend, chats, steps))
    return result


def print_report(results: list[dict]) -> None:
    print("\n| format | weights read per step | ceiling tok/s (bandwidth / weights) | chats | ms per step | "
          "tok/s | of the ceiling | matmul | attention | other ops | outside ops | bandwidth used |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ceiling = r["bandwidth_gbs"] * 1e9 / r["weight_bytes"]
        for run in r["runs"]:
            used = r["weight_bytes"] / (run["step_ms"] / 1e3) / 1e9
            print(f"| {r['format']} | {r['weight_bytes'] / 2**20:.0f} MiB | {ceiling:.1f} | {run['chats']} | "
                  f"{run['step_ms']} | {run['tokens_per_s']} | {run['tokens_per_s'] / run['chats'] / ceiling:.0%} | "
                  f"{run['matmul_share']:.0%} | {run['attention_share']:.0%} | {run['other_ops_share']:.0%} | "
                  f"{run['outside_ops_share']:.0%} | {used:.1f} GB/s |")
    print("\nRead bandwidth measured in each format's process (GB/s): "
          + ", ".join(f"{r['format']} {r['bandwidth_gbs']}" for r in results))
    for r in results:
        for run in r["runs"]:
            print(f"top ops, {r['format']}, {run['chats']} chat(s): " + "; ".join(run["top_ops"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="fp32,bf16,int8")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: one format, JSON on the last line
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.one:
        print(json.dumps(measure(args.one, args.steps, batches)))
        return
    header("Decode step profile per weight format")
    print(cpu_flags_line(), flush=True)
    results = []
    for precision in args.formats.split(","):
        child = subprocess.run([sys.executable, __file__, "--one", precision, "--steps", str(args.steps),
                                "--batches", args.batches], capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{precision}: failed\n{child.stderr[-2000:]}", flush=True)
            continue
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"{precision}: done", flush=True)
    print_report(results)


if __name__ == "__main__":
    main()
