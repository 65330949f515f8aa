# A torchrun-style PyTorch DistributedDataParallel script (gloo): reads RANK, WORLD_SIZE,
# MASTER_ADDR, MASTER_PORT from the environment, trains a small model a few steps, checks the
# replicas agree, exits 0. Used by coord_ddp_test through a `command` job.
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

torch.set_num_threads(1)
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)  # env:// rendezvous
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
gen = torch.Generator().manual_seed(100 + rank)
for step in range(20):
    x = torch.randn(32, 16, generator=gen)
    loss = ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if rank == 0 and step % 5 == 0:
        print(f'{{"msg": "step", "step": {step}, "loss": {loss.item():.4f}}}', flush=True)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(world)]
dist.all_gather(gathered, flat)
same = all(torch.equal(gathered[0], g) for g in gathered)
print(f"rank {rank}/{world} done, replicas identical: {same}", flush=True)
dist.destroy_process_group()
sys.exit(0 if same else 1)
