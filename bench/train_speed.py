"""Training speed of every model preset on this machine, against its own matmul speed.

    python bench/train_speed.py [--presets tiny,small,base] [--steps 4] [--device cpu|cuda]

For each preset it times a few optimiser steps on batches shaped like pretraining (8192 tokens
of 40-token lines, 70% of positions converted, a realistic candidate-set density), and prints
training tokens/s, model FLOPs per token (forward + backward), the achieved FLOP/s, and that as
a fraction of the large-matmul FLOP/s measured in the same run. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pinzi.model import PRESETS, PinziConfig, PinziForPinyin

VOCAB, CHARS, OFFSET = 7800, 7350, 5  # the shipped model's vocabulary layout
LINE, CONVERTED, CANDIDATE_DENSITY = 40, 0.7, 0.01


def matmul_flops(device: str, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flops_per_token(config: PinziConfig) -> float:
    """Forward + backward FLOPs per token: 6 x (weights touched) plus attention scores."""
    d, layers = config.hidden_size, config.num_layers
    body = layers * (4 * d * d + 2 * d * config.intermediate_size)  # qkv, out, mlp
    attention = 2 * layers * LINE * d  # QK^T and AV, per token, forward
    head = CONVERTED * d * config.n_chars
    return 6 * body + 3 * 2 * attention + 6 * head


def time_preset(name: str, batch_tokens: int, steps: int, device: str) -> dict:
    config = PinziConfig.from_preset(name, vocab_size=VOCAB, n_chars=CHARS, char_offset=OFFSET,
                                     dropout=0.0)
    model = PinziForPinyin(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = batch_tokens // LINE
    input_ids = torch.randint(OFFSET, VOCAB, (rows, LINE), device=device)
    labels = torch.randint(0, CHARS, (rows, LINE), device=device)
    labels[torch.rand(rows, LINE, device=device) > CONVERTED] = -100
    selected = int((labels != -100).sum())
    mask = torch.rand(selected, CHARS, device=device) < CANDIDATE_DENSITY
    mask[torch.arange(selected), labels[labels != -100]] = True
    attention = torch.ones_like(input_ids)

    def step() -> None:
        model(input_ids, attention, labels=labels, candidate_mask=mask).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, kernel selection
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    tokens_per_s = rows * LINE / seconds
    flops = flops_per_token(config)
    return {"preset": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "tokens_per_s": tokens_per_s, "gflop_per_token": flops / 1e9,
            "achieved_gflops": tokens_per_s * flops / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,small,base")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    peak = matmul_flops(args.device)
    print(f"device {args.device}, threads {torch.get_num_threads()}, "
          f"large-matmul {peak / 1e9:.1f} GFLOP/s")
    print(f"{'preset':<8}{'params':>9}{'tokens/s':>11}{'GFLOP/tok':>11}{'GFLOP/s':>10}"
          f"{'of peak':>9}")
    rows = []
    for name in args.presets.split(","):
        if name not in PRESETS:
            parser.error(f"unknown preset {name}")
        row = time_preset(name, args.batch_tokens, args.steps, args.device)
        row["fraction_of_matmul"] = row["achieved_gflops"] * 1e9 / peak
        rows.append(row)
        print(f"{name:<8}{row['params_M']:>8.1f}M{row['tokens_per_s']:>11,.0f}"
              f"{row['gflop_per_token']:>11.4f}{row['achieved_gflops']:>10.1f}"
              f"{row['fraction_of_matmul']:>9.0%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": peak / 1e9, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
