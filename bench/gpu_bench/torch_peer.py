#!/usr/bin/env python3
"""PyTorch CUDA peer for bench/gpu_bench: the same cases and shapes as cases.cc/block.cc, in
float32 with TF32 off (as ours by default), timed the same way (3 warm-up calls, median over
--repeats of --iters calls, synchronised). Prints one JSON line: {"case": ..., "seconds": s}."""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DEV = torch.device("cuda:0")


def rnd(*shape, grad=False):
    t = torch.rand(*shape, device=DEV) - 0.5
    return t.requires_grad_(grad)


def gemm():
    a, b = rnd(4096, 4096), rnd(4096, 4096)
    c = torch.empty(4096, 4096, device=DEV)
    return lambda: torch.matmul(a, b, out=c)


def layernorm():
    x, g, b = rnd(16384, 768, grad=True), rnd(768, grad=True), rnd(768, grad=True)
    dy = rnd(16384, 768)

    def step():
        F.layer_norm(x, (768,), g, b, 1e-5).backward(dy)
    return step


def causal_attention(qkv, heads):
    bsz, t, c3 = qkv.shape
    c = c3 // 3
    q, k, v = qkv.split(c, dim=2)
    q, k, v = (z.view(bsz, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // heads))
    mask = torch.ones(t, t, device=qkv.device, dtype=torch.bool).triu(1)
    att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
    return (att @ v).transpose(1, 2).contiguous().view(bsz, t, c)


def attention():
    qkv, dout = rnd(8, 1024, 3 * 768, grad=True), rnd(8, 1024, 768)

    def step():
        causal_attention(qkv, 12).backward(dout)
    return step


class Block(torch.nn.Module):
    def __init__(self, c=256, heads=4, mlp=1024):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(c), torch.nn.LayerNorm(c)
        self.c_attn, self.c_proj = torch.nn.Linear(c, 3 * c), torch.nn.Linear(c, c)
        self.fc, self.out = torch.nn.Linear(c, mlp), torch.nn.Linear(mlp, c)

    def forward(self, x):
        x = x + self.c_proj(causal_attention(self.c_attn(self.ln1(x)), self.heads))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


def block():
    m = Block().to(DEV)
    x, dout = rnd(16, 128, 256, grad=True), rnd(16, 128, 256)

    def step():
        m(x).backward(dout)
    return step


CASES = {
    "gemm-f32-4096": gemm,
    "layernorm-fwd-bwd-16384x768": layernorm,
    "attention-fwd-bwd-b8-t1024-c768-h12": attention,
    "gpt-tiny-block-fwd-bwd-b16-t128": block,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_peer: torch sees no CUDA device", file=sys.stderr)
        return 1
    step = CASES[args.case]()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    runs = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - t0) / args.iters)
    print(json.dumps({"case": args.case, "seconds": statistics.median(runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
