#!/usr/bin/python3
"""PyTorch peer for bench/train_bench: builds one reference workload (gpt-tiny or mlp-mnist,
the configs of ../shared/notes/workloads.md) and then serves timing requests on stdin so the
C++ driver can interleave it with our runs. Protocol (one line each way):
  driver: "run N"  -> peer runs N full train steps, answers
                      {"seconds": wall, "cpu_seconds": process CPU time, "loss": l}
  driver: "quit" or EOF -> peer exits
At start the peer prints {"ready": true, "torch": version, "params": n} (or {"error": msg}).
Run with /usr/bin/python3 (Debian python3-torch 1.13); LD_PRELOAD is up to the driver."""
import argparse
import json
import os
import sys
import time


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    reply({"error": f"cannot import torch: {e}"})
    sys.exit(3)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_reference import Gpt  # noqa: E402  (shared with the other peer)


def optimizer(cls, params, device, **kw):
    """The optimizer at its best on `device`: fused CUDA kernels where torch has them."""
    if device.type == "cuda":
        try:
            return cls(params, fused=True, **kw)
        except (TypeError, RuntimeError, ValueError):
            pass
    return cls(params, **kw)


def build(workload, batch, device):
    """Returns (model, optimizer, inputs, targets) for one workload with random data."""
    g = torch.Generator().manual_seed(1)
    if workload == "gpt-tiny":
        model = Gpt(8192, 128, 256, 4, 4, 1024).to(device)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        opt = optimizer(torch.optim.AdamW, [{"params": decay, "weight_decay": 0.01},
                                            {"params": rest, "weight_decay": 0.0}], device,
                        lr=3e-4)
        x = torch.randint(0, 8192, (batch, 128), generator=g)
        y = torch.randint(0, 8192, (batch, 128), generator=g)
    elif workload == "mlp-mnist":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        model = model.to(device)
        opt = optimizer(torch.optim.SGD, list(model.parameters()), device, lr=0.01, momentum=0.9)
        x = torch.randn(batch, 784, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
    else:
        raise ValueError(f"unknown workload {workload!r}: expected gpt-tiny or mlp-mnist")
    return model, opt, x.to(device), y.to(device)


def blas_library():
    """Which BLAS torch's Linear ends up in: Debian's torch uses the libblas.so.3 alternative,
    and the reference (netlib) one is ~20x slower than OpenBLAS, i.e. not PyTorch at its best."""
    torch.randn(64, 64) @ torch.randn(64, 64)  # make sure the BLAS is loaded
    with open("/proc/self/maps") as f:
        maps = f.read()
    for name, marker in (("openblas", "openblas"), ("mkl", "libmkl"), ("blis", "libblis"),
                         ("reference", "/blas/libblas.so")):
        if marker in maps:
            return name + openblas_core(maps) if name == "openblas" else name
    return "unknown"


def openblas_core(maps):
    """'/SkylakeX', '/Haswell', ...: the kernels OpenBLAS chose (OPENBLAS_CORETYPE overrides its
    detection; on AVX-512 machines Haswell's AVX2 kernels are ~35% slower)."""
    import ctypes
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if "openblas" in path and ".so" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                return "/" + lib.openblas_get_corename().decode()
            except (OSError, AttributeError):
                return ""
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", required=True, choices=["gpt-tiny", "mlp-mnist"])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="bf16: forward and loss under torch.autocast(device, torch.bfloat16)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        model, opt, x, y = build(args.workload, args.batch, device)
    except Exception as e:  # report, don't hang the driver
        reply({"error": f"building {args.workload}: {e}"})
        return 3

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    reply({"ready": True, "torch": torch.__version__,
           "blas": blas_library() if device.type == "cpu" else torch.cuda.get_device_name(device),
           "params": sum(p.numel() for p in model.parameters())})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] != "run" or len(cmd) != 2:
            reply({"error": f"unknown command {line.strip()!r}: expected 'run N' or 'quit'"})
            continue
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(int(cmd[1])):
            loss = train_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        reply({"seconds": time.perf_counter() - start,
               "cpu_seconds": time.process_time() - cpu_start, "loss": float(loss)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
