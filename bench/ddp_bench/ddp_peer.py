#!/usr/bin/python3
"""PyTorch peer for bench/ddp_bench: one rank of a DistributedDataParallel run (gloo) of a
reference workload (gpt-tiny or mlp-mnist, configs of ../shared/notes/workloads.md) with random
data. Rank/world come from the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
Modes: ddp (gradients allreduced every step), nosync (same DDP model inside no_sync(): the
compute without the allreduce), single (no process group; one rank alone).
After --warmup steps every rank meets at a barrier, runs --steps timed steps, meets again; rank 0
prints one JSON line {"seconds": s, "steps": n, "items_per_step": global items, ...}.
Run with /usr/bin/python3 (Debian python3-torch 1.13); LD_PRELOAD is up to the driver."""
import argparse
import json
import os
import sys
import time

try:
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    print(json.dumps({"error": f"cannot import torch with {sys.executable}: {e}"}), flush=True)
    sys.exit(3)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_reference import Gpt  # noqa: E402  (shared with the other peer)


def build(workload, batch, rank):
    """(model, optimizer, inputs, targets, items per rank per step); data differs per rank."""
    torch.manual_seed(1)  # identical initial replicas (DDP also broadcasts rank 0's)
    g = torch.Generator().manual_seed(1000 + rank)
    if workload == "gpt-tiny":
        model = Gpt(8192, 128, 256, 4, 4, 1024)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
        make_opt = lambda params: torch.optim.AdamW(groups, lr=3e-4)  # noqa: E731
        x = torch.randint(0, 8192, (batch, 128), generator=g)
        y = torch.randint(0, 8192, (batch, 128), generator=g)
        items = batch * 128
    elif workload == "mlp-mnist":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        make_opt = lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)  # noqa: E731
        x = torch.randn(batch, 784, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        items = batch
    else:
        raise ValueError(f"unknown workload {workload!r}: expected gpt-tiny or mlp-mnist")
    return model, make_opt, x, y, items


def bind_local_rank():
    """The CPU binding `gantry train` applies (train/cpu_binding.h, GANTRY_BIND=auto): with
    several local ranks and an unrestricted CPU set, each rank takes its own equal slice."""
    mode = os.environ.get("GANTRY_BIND", "auto")
    local_rank = int(os.environ.get("LOCAL_RANK", "-1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    allowed = sorted(os.sched_getaffinity(0))
    if mode == "none" or local_world <= 1 or not 0 <= local_rank < local_world:
        return
    if mode == "auto" and len(allowed) != os.cpu_count():
        return
    per = len(allowed) // local_world
    if per > 0:
        os.sched_setaffinity(0, allowed[per * local_rank:per * (local_rank + 1)])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", required=True, choices=["gpt-tiny", "mlp-mnist"])
    ap.add_argument("--mode", required=True, choices=["ddp", "nosync", "single"])
    ap.add_argument("--batch", type=int, required=True, help="per rank")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout-s", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bind_local_rank()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.mode == "single":
        rank, world = 0, 1
    model, make_opt, x, y, items = build(args.workload, args.batch, rank)
    if args.mode != "single":
        import datetime
        dist.init_process_group("gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=args.timeout_s))
        model = nn.parallel.DistributedDataParallel(model)  # default 25 MiB buckets
    # Optimizer over the (possibly DDP-wrapped) model's parameters.
    opt = make_opt(list(model.parameters()))

    def step():
        opt.zero_grad(set_to_none=True)
        if args.mode == "nosync":
            with model.no_sync():
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                loss.backward()
        else:
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"seconds": seconds, "steps": args.steps, "items_per_step": items * world,
                          "loss": float(loss), "torch": torch.__version__, "world": world}),
              flush=True)
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
