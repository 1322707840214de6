#!/usr/bin/env python3
"""PyTorch training-throughput baseline for `badge` (the same llama2.c model as src/train/model.rs).

Forward + backward + AdamW (two parameter groups, grad clipping) on random batches, f32, CPU.
Attention: `naive` (explicit scores, causal mask, softmax) or `sdpa`
(`F.scaled_dot_product_attention(is_causal=True)`). Prints the median tokens/s.

    python3 scripts/bench_train.py --model badge-1m --attn naive --threads 2 --steps 10 --json
"""
import argparse
import json
import math
import os
import statistics
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, seq_len, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    ang = torch.outer(torch.arange(seq_len).float(), freqs)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    # x: (B, T, H, hd), interleaved pairs (llama2.c).
    xr, xi = x.float().reshape(x.shape[:-1] + (-1, 2)).unbind(-1)
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]
    out_r = xr * cos - xi * sin
    out_i = xr * sin + xi * cos
    return torch.stack([out_r, out_i], dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self, c, sdpa):
        super().__init__()
        self.nh, self.nkv = c["n_heads"], c["n_kv_heads"]
        self.hd = c["dim"] // self.nh
        d = c["dim"]
        self.wq = nn.Linear(d, self.nh * self.hd, bias=False)
        self.wk = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.wv = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.wo = nn.Linear(self.nh * self.hd, d, bias=False)
        self.sdpa = sdpa

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.nh, self.hd)
        k = self.wk(x).view(b, t, self.nkv, self.hd)
        v = self.wv(x).view(b, t, self.nkv, self.hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(2, 3)) / math.sqrt(self.hd)
            att = att + mask[:, :, :t, :t]
            att = F.softmax(att.float(), dim=-1)
            y = att @ v
        return self.wo(y.transpose(1, 2).contiguous().view(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h = c["dim"], c["hidden_dim"]
        self.w1 = nn.Linear(d, h, bias=False)
        self.w2 = nn.Linear(h, d, bias=False)
        self.w3 = nn.Linear(d, h, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c, sdpa):
        super().__init__()
        self.attn_norm = RMSNorm(c["dim"], c["norm_eps"])
        self.attn = Attention(c, sdpa)
        self.ffn_norm = RMSNorm(c["dim"], c["norm_eps"])
        self.ffn = FeedForward(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, c, sdpa):
        super().__init__()
        self.tok = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList(Block(c, sdpa) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c["norm_eps"])
        self.out = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        self.out.weight = self.tok.weight  # tied
        cos, sin = rope_tables(c["dim"] // c["n_heads"], c["seq_len"], c["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        t = c["seq_len"]
        mask = torch.full((1, 1, t, t), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)
        for n, p in self.named_parameters():
            if p.dim() > 1:
                std = 0.02 / math.sqrt(2 * c["n_layers"]) if n.endswith(("wo.weight", "w2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, targets, mask):
        t = ids.shape[1]
        x = self.tok(ids)
        cos, sin = self.cos[:t], self.sin[:t]
        for layer in self.layers:
            x = layer(x, cos, sin, self.mask)
        logits = self.out(self.norm(x))
        nll = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction="none")
        m = mask.view(-1)
        return (nll * m).sum() / m.sum().clamp(min=1.0)


def load_config(name):
    path = name if name.endswith(".toml") else os.path.join(ROOT, "configs", "models", name + ".toml")
    with open(path, "rb") as f:
        c = tomllib.load(f)
    c.setdefault("norm_eps", 1e-5)
    c.setdefault("rope_theta", 10000.0)
    return c


def sync(device):
    """A GPU runs asynchronously: wait for its queued kernels before reading the clock."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def bench(name, attn, steps, warmup, batch, seq, device="cpu"):
    c = load_config(name)
    torch.manual_seed(0)
    model = Transformer(c, attn == "sdpa").to(device)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    rates, loss = [], float("nan")
    for step in range(warmup + steps):
        ids = torch.randint(0, c["vocab_size"], (batch, seq), device=device)
        tg = torch.randint(0, c["vocab_size"], (batch, seq), device=device)
        m = torch.ones(batch, seq, device=device)
        sync(device)
        t0 = time.perf_counter()
        l = model(ids, tg, m)
        opt.zero_grad(set_to_none=True)
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = l.item()
        sync(device)
        dt = time.perf_counter() - t0
        if step >= warmup:
            rates.append(batch * seq / dt)
    return statistics.median(rates), loss, rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append")
    ap.add_argument("--attn", choices=["naive", "sdpa"], default="naive")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    for name in a.model or ["badge-1m", "badge-6m"]:
        med, loss, rates = bench(name, a.attn, a.steps, a.warmup, a.batch, a.seq, a.device)
        if a.json:
            print(json.dumps({"impl": "torch-" + a.attn, "device": a.device, "model": name, "threads": a.threads,
                              "batch": a.batch, "seq": a.seq, "steps": a.steps,
                              "tokens_per_sec": med, "samples": rates, "final_loss": loss}))
        else:
            print(f"{name} torch-{a.attn}: {med:.0f} tokens/s (median of {a.steps}), loss {loss:.4f}")


if __name__ == "__main__":
    main()
