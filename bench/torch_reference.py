"""The reference workloads of ../shared/notes/workloads.md as PyTorch modules, shared by the
CPU peers of bench/train_bench (torch_peer.py) and bench/ddp_bench (ddp_peer.py), so both
benchmarks time exactly the same torch model. Import after checking that torch imports."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """GPT-2 block: pre-LayerNorm, causal attention (nanoGPT's explicit path; torch 1.13 has
    no scaled_dot_product_attention), tanh-GELU MLP."""

    def __init__(self, d, heads, hidden, context):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.heads = heads
        # A plain attribute, not a buffer: gloo cannot broadcast bool tensors (DDP syncs buffers).
        self.mask = torch.ones(context, context, dtype=torch.bool).tril()

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        if self.mask.device != x.device:  # not a buffer, so model.to(device) leaves it behind
            self.mask = self.mask.to(x.device)
        att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(dim=-1)
        x = x + self.attn_proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    """gpt-tiny: learned positions, tied input/output embeddings, no dropout."""

    def __init__(self, vocab, context, d, layers, heads, hidden):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.h = nn.ModuleList(Block(d, heads, hidden, context) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied lm_head
