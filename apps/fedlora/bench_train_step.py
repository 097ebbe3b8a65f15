#!/usr/bin/python3
"""The Python side of `fedlora bench train`: one LoRA training step of fedlora's ViT or GPT in plain PyTorch,
timed. `fedlora bench train` embeds this file, writes it next to the model and the batch it saved, and runs it
with Debian's /usr/bin/python3 (torch 1.13); it can also be run by hand:

  bench_train_step.py --model vit|gpt2 --weights W.safetensors --batch B.safetensors --threads N
                      [--seconds S | --serve] [--warmup N] [--lr LR]

W holds every tensor of the model (base and LoRA) under fedlora's names (timm ViT / Hugging Face GPT-2), with the
architecture in the header metadata ("vit.dim", "gpt.heads", ..., "lora.alpha"); a layer is adapted when
"<layer>.lora_A" is there. B holds "pixels" [B, C, S, S] and "labels" [B] (vit) or "ids" [B, T] (gpt2).

A step is what fedlora's C++ step does: zero_grad, forward, cross-entropy (next-token for the GPT), backward,
torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay 0) over the LoRA factors only. The model is written
the way PyTorch users write it (nn.Module, F.linear / addmm, F.layer_norm, F.gelu, matmul attention, a registered
causal mask), independently of the C++ code. After the warm-up steps it prints one JSON line
  {"first_loss": l, "threads": N, "torch": "1.13..."}
then, with --seconds S, times steps for S seconds and prints {"steps": n, "seconds": t}. With --serve it waits
instead for lines "run S" on stdin, answering each with such a line, until "quit" or end of input: that is how
fedlora interleaves its C++ and Python timings, so that a change of machine load hits both sides alike.
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ST_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    """(metadata, {name: tensor}) of a safetensors file (Debian has no `safetensors` module)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = memoryview(raw)[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=np.dtype(ST_DTYPES[info["dtype"]]).newbyteorder("<"))
        tensors[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return meta, tensors


class LoraDense(nn.Module):
    """A frozen dense layer (nn.Linear layout [out, in], or GPT-2 Conv1D [in, out]) with an optional LoRA branch
    scaling * B(A x), as PEFT computes it."""

    def __init__(self, n_in, n_out, conv1d, rank, scaling):
        super().__init__()
        self.conv1d = conv1d
        self.weight = nn.Parameter(torch.empty((n_in, n_out) if conv1d else (n_out, n_in)), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(n_out), requires_grad=False)
        self.scaling = scaling
        self.rank = rank
        if rank:
            self.lora_A = nn.Parameter(torch.empty(rank, n_in))
            self.lora_B = nn.Parameter(torch.empty(n_out, rank))

    def forward(self, x):
        if self.conv1d:  # as transformers' Conv1D
            shape = x.shape[:-1] + (self.weight.shape[1],)
            y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)
        else:
            y = F.linear(x, self.weight, self.bias)
        if self.rank:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


def make_dense(tensors, name, n_in, n_out, conv1d, scaling):
    a = tensors.get(name + ".lora_A")
    return LoraDense(n_in, n_out, conv1d, a.shape[0] if a is not None else 0, scaling)


# ---- ViT (timm layout) ----------------------------------------------------------------------------------------------

class VitAttention(nn.Module):
    def __init__(self, t, pre, dim, heads, scaling):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = make_dense(t, pre + "qkv", dim, 3 * dim, False, scaling)
        self.proj = make_dense(t, pre + "proj", dim, dim, False, scaling)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class VitMlp(nn.Module):
    def __init__(self, t, pre, dim, hidden, scaling):
        super().__init__()
        self.fc1 = make_dense(t, pre + "fc1", dim, hidden, False, scaling)
        self.fc2 = make_dense(t, pre + "fc2", hidden, dim, False, scaling)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, t, i, cfg, scaling):
        super().__init__()
        d = cfg["dim"]
        self.norm1 = nn.LayerNorm(d, eps=cfg["eps"])
        self.attn = VitAttention(t, f"blocks.{i}.attn.", d, cfg["heads"], scaling)
        self.norm2 = nn.LayerNorm(d, eps=cfg["eps"])
        self.mlp = VitMlp(t, f"blocks.{i}.mlp.", d, cfg["mlp"], scaling)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, channels, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Vit(nn.Module):
    def __init__(self, t, cfg, scaling):
        super().__init__()
        d, s, p = cfg["dim"], cfg["image_size"], cfg["patch_size"]
        self.patch_embed = PatchEmbed(cfg["in_channels"], p, d)
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + (s // p) ** 2, d))
        self.blocks = nn.ModuleList(VitBlock(t, i, cfg, scaling) for i in range(cfg["depth"]))
        self.norm = nn.LayerNorm(d, eps=cfg["eps"])
        self.head = make_dense(t, "head", d, cfg["num_classes"], False, scaling)

    def forward(self, pixels):
        x = self.patch_embed(pixels)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])

    def loss(self, batch):
        return F.cross_entropy(self(batch["pixels"]), batch["labels"])


# ---- GPT-2 (Hugging Face layout) ------------------------------------------------------------------------------------

class GptAttention(nn.Module):
    def __init__(self, t, pre, dim, heads, context, scaling):
        super().__init__()
        self.heads = heads
        self.c_attn = make_dense(t, pre + "c_attn", dim, 3 * dim, True, scaling)
        self.c_proj = make_dense(t, pre + "c_proj", dim, dim, True, scaling)
        self.register_buffer("bias", torch.tril(torch.ones(context, context, dtype=torch.bool)).view(
            1, 1, context, context), persistent=False)

    def split(self, x):
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = self.split(q), self.split(k), self.split(v)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(v.shape[-1])
        w = torch.where(self.bias[:, :, :n, :n], w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        out = torch.matmul(w.softmax(dim=-1), v).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.c_proj(out)


class GptMlp(nn.Module):
    def __init__(self, t, pre, dim, hidden, scaling):
        super().__init__()
        self.c_fc = make_dense(t, pre + "c_fc", dim, hidden, True, scaling)
        self.c_proj = make_dense(t, pre + "c_proj", hidden, dim, True, scaling)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GptBlock(nn.Module):
    def __init__(self, t, i, cfg, scaling):
        super().__init__()
        d = cfg["dim"]
        self.ln_1 = nn.LayerNorm(d, eps=cfg["eps"])
        self.attn = GptAttention(t, f"h.{i}.attn.", d, cfg["heads"], cfg["context"], scaling)
        self.ln_2 = nn.LayerNorm(d, eps=cfg["eps"])
        self.mlp = GptMlp(t, f"h.{i}.mlp.", d, cfg["mlp"], scaling)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, t, cfg, scaling):
        super().__init__()
        d = cfg["dim"]
        self.wte = nn.Embedding(cfg["vocab_size"], d)
        self.wpe = nn.Embedding(cfg["context"], d)
        self.h = nn.ModuleList(GptBlock(t, i, cfg, scaling) for i in range(cfg["depth"]))
        self.ln_f = nn.LayerNorm(d, eps=cfg["eps"])

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], dtype=torch.long)
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.h:
            x = blk(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # lm_head tied to wte

    def loss(self, batch):
        ids = batch["ids"]
        logits = self(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


# ---- driver -----------------------------------------------------------------------------------------------------------

def config(meta, prefix):
    g = lambda key: meta[prefix + key]  # noqa: E731
    cfg = {"dim": int(g("dim")), "depth": int(g("depth")), "heads": int(g("heads")), "eps": float(g("layer_norm_eps"))}
    cfg["mlp"] = int(cfg["dim"] * float(g("mlp_ratio")))
    if prefix == "vit.":
        cfg.update(image_size=int(g("image_size")), patch_size=int(g("patch_size")),
                   in_channels=int(g("in_channels")), num_classes=int(g("num_classes")))
    else:
        cfg.update(vocab_size=int(g("vocab_size")), context=int(g("context")))
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("vit", "gpt2"), required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batch", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    meta, tensors = read_safetensors(args.weights)
    lora_a = [n for n in tensors if n.endswith(".lora_A")]
    scaling = float(meta["lora.alpha"]) / tensors[lora_a[0]].shape[0] if lora_a else 0.0
    if args.model == "vit":
        model = Vit(tensors, config(meta, "vit."), scaling)
    else:
        model = Gpt(tensors, config(meta, "gpt."), scaling)
    model.load_state_dict(tensors, strict=True)
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith(".lora_A") or name.endswith(".lora_B"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    _, batch = read_safetensors(args.batch)
    model.train()

    def step():
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        return loss

    def timed(seconds):
        steps, t0 = 0, time.perf_counter()
        while True:
            step()
            steps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and steps >= 2:
                return {"steps": steps, "seconds": elapsed}

    first_loss = step().item()
    for _ in range(max(0, args.warmup - 1)):
        step()
    print(json.dumps({"first_loss": first_loss, "threads": torch.get_num_threads(), "torch": torch.__version__}),
          flush=True)
    if not args.serve:
        print(json.dumps(timed(args.seconds)), flush=True)
        return 0
    while True:
        line = sys.stdin.readline()
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] != "run" or len(words) != 2:
            sys.exit("bench_train_step.py: unknown request " + repr(line))
        print(json.dumps(timed(float(words[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
