#!/usr/bin/python3
"""Independent Python (plain torch.nn) reference for fedlora's C++ models, used by test_learn_models.

  models_reference.py vit  WEIGHTS.safetensors INPUTS.safetensors OUT.safetensors
  models_reference.py gpt2 WEIGHTS.safetensors INPUTS.safetensors OUT.safetensors

WEIGHTS holds every tensor of the model (base and LoRA) under the C++ names, which are timm's ViT and Hugging Face's
GPT-2 names, with the architecture in the header metadata ("vit.dim", "gpt.heads", ..., "lora.alpha"); a layer has
a LoRA adapter when "<layer>.lora_A" is present. The model here is built from those numbers alone and loaded with
load_state_dict(strict=True), so the names and shapes are checked too. INPUTS holds
  vit:  "pixels" [B, C, S, S] and "labels" [B]       loss = cross-entropy(logits, labels)
  gpt2: "ids" [B, T]                                 loss = next-token cross-entropy (positions 0..T-2 predict 1..T-1)
The computation runs in the weights' dtype. OUT receives "logits", "loss", "grad.input" (d loss / d pixels, or
d loss / d token embeddings wte[ids]) and "grad.<name>" for every LoRA factor.

The layers are written out by hand (attention with einsum, GELU from its formula, the patch embedding as a reshape
and a matrix product) rather than mirroring the C++ code. safetensors files are read with safetensors_reference.py
(Debian's Python has no `safetensors` package) and written with the small writer below."""
import math
import os
import struct
import sys
import json

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_reference  # noqa: E402

NP_TO_ST = {"float64": "F64", "float32": "F32", "int64": "I64"}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.array(arr, order="C")  # (np.ascontiguousarray would turn a 0-d loss into shape [1])
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": NP_TO_ST[arr.dtype.name], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


class Dense(nn.Module):
    """y = x W^T + b; `in_out` stores W as [in, out] (GPT-2 Conv1D: y = x W + b). With rank > 0 adds the LoRA term
    scaling * (x A^T) B^T, A [rank, in], B [out, rank]."""

    def __init__(self, n_in, n_out, in_out=False, rank=0, scaling=0.0):
        super().__init__()
        self.in_out = in_out
        self.weight = nn.Parameter(torch.empty((n_in, n_out) if in_out else (n_out, n_in)))
        self.bias = nn.Parameter(torch.empty(n_out))
        self.rank = rank
        self.scaling = scaling
        if rank:
            self.lora_A = nn.Parameter(torch.empty(rank, n_in))
            self.lora_B = nn.Parameter(torch.empty(n_out, rank))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        w = self.weight if self.in_out else self.weight.t()
        y = torch.addmm(self.bias, flat, w)
        if self.rank:
            y = y + self.scaling * (flat @ self.lora_A.t()) @ self.lora_B.t()
        return y.reshape(*x.shape[:-1], y.shape[-1])


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def attention(q, k, v, heads, causal):
    """q, k, v [B, N, C] -> [B, N, C], scaled dot-product attention over `heads` heads."""
    b, n, c = q.shape
    hd = c // heads
    q, k, v = (t.reshape(b, n, heads, hd) for t in (q, k, v))
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
    if causal:
        allowed = torch.ones(n, n, dtype=torch.bool).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, c)


def lora_args(names, layer, scaling):
    if layer + ".lora_A" in names:
        return {"rank": names[layer + ".lora_A"].shape[0], "scaling": scaling}
    return {}


# ---- ViT (timm names) ------------------------------------------------------------------------------------------------

class PatchProj(nn.Module):
    def __init__(self, c, p, d):
        super().__init__()
        self.c, self.p = c, p
        self.weight = nn.Parameter(torch.empty(d, c, p, p))
        self.bias = nn.Parameter(torch.empty(d))

    def forward(self, x):
        b, c, s, _ = x.shape
        p, g = self.p, s // self.p
        # [B, C, g, p, g, p] -> [B, g·g patches in row-major order, C·p·p]
        patches = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        return patches @ self.weight.reshape(self.weight.shape[0], -1).t() + self.bias


class PatchEmbed(nn.Module):
    def __init__(self, c, p, d):
        super().__init__()
        self.proj = PatchProj(c, p, d)


class ViTAttention(nn.Module):
    def __init__(self, d, heads, names, prefix, scaling):
        super().__init__()
        self.heads = heads
        self.qkv = Dense(d, 3 * d, **lora_args(names, prefix + "qkv", scaling))
        self.proj = Dense(d, d, **lora_args(names, prefix + "proj", scaling))

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(attention(q, k, v, self.heads, causal=False))


class ViTMlp(nn.Module):
    def __init__(self, d, m, names, prefix, scaling):
        super().__init__()
        self.fc1 = Dense(d, m, **lora_args(names, prefix + "fc1", scaling))
        self.fc2 = Dense(m, d, **lora_args(names, prefix + "fc2", scaling))

    def forward(self, x):
        return self.fc2(gelu_erf(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, cfg, names, i, scaling):
        super().__init__()
        d, eps = cfg["dim"], cfg["eps"]
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = ViTAttention(d, cfg["heads"], names, f"blocks.{i}.attn.", scaling)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = ViTMlp(d, cfg["mlp"], names, f"blocks.{i}.mlp.", scaling)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, cfg, names, scaling):
        super().__init__()
        d, s, p = cfg["dim"], cfg["image_size"], cfg["patch_size"]
        self.patch_embed = PatchEmbed(cfg["in_channels"], p, d)
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + (s // p) ** 2, d))
        self.blocks = nn.ModuleList(ViTBlock(cfg, names, i, scaling) for i in range(cfg["depth"]))
        self.norm = nn.LayerNorm(d, eps=cfg["eps"])
        self.head = Dense(d, cfg["num_classes"], **lora_args(names, "head", scaling))

    def forward(self, pixels):
        x = self.patch_embed.proj(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, x.shape[2]), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# ---- GPT-2 (Hugging Face names, Conv1D weights [in, out]) --------------------------------------------------------

class GptAttention(nn.Module):
    def __init__(self, d, heads, names, prefix, scaling):
        super().__init__()
        self.heads = heads
        self.c_attn = Dense(d, 3 * d, in_out=True, **lora_args(names, prefix + "c_attn", scaling))
        self.c_proj = Dense(d, d, in_out=True, **lora_args(names, prefix + "c_proj", scaling))

    def forward(self, x):
        d = x.shape[-1]
        qkv = self.c_attn(x)
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        return self.c_proj(attention(q, k, v, self.heads, causal=True))


class GptMlp(nn.Module):
    def __init__(self, d, m, names, prefix, scaling):
        super().__init__()
        self.c_fc = Dense(d, m, in_out=True, **lora_args(names, prefix + "c_fc", scaling))
        self.c_proj = Dense(m, d, in_out=True, **lora_args(names, prefix + "c_proj", scaling))

    def forward(self, x):
        return self.c_proj(gelu_tanh(self.c_fc(x)))


class GptBlock(nn.Module):
    def __init__(self, cfg, names, i, scaling):
        super().__init__()
        d, eps = cfg["dim"], cfg["eps"]
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = GptAttention(d, cfg["heads"], names, f"h.{i}.attn.", scaling)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = GptMlp(d, cfg["mlp"], names, f"h.{i}.mlp.", scaling)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, cfg, names, scaling):
        super().__init__()
        d = cfg["dim"]
        self.wte = nn.Embedding(cfg["vocab_size"], d)
        self.wpe = nn.Embedding(cfg["context"], d)
        self.h = nn.ModuleList(GptBlock(cfg, names, i, scaling) for i in range(cfg["depth"]))
        self.ln_f = nn.LayerNorm(d, eps=cfg["eps"])

    def forward_embeds(self, embeds):
        x = embeds + self.wpe.weight[: embeds.shape[1]]
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # head tied to wte


# ---- driver ------------------------------------------------------------------------------------------------------------

def config(meta, prefix):
    def get(key, cast):
        return cast(meta[prefix + key])
    cfg = {"dim": get("dim", int), "depth": get("depth", int), "heads": get("heads", int),
           "eps": get("layer_norm_eps", float)}
    cfg["mlp"] = int(cfg["dim"] * get("mlp_ratio", float))
    if prefix == "vit.":
        cfg.update(image_size=get("image_size", int), patch_size=get("patch_size", int),
                   in_channels=get("in_channels", int), num_classes=get("num_classes", int))
    else:
        cfg.update(vocab_size=get("vocab_size", int), context=get("context", int))
    if float(meta.get(prefix + "dropout", "0")) != 0.0 or float(meta.get("lora.dropout", "0")) != 0.0:
        raise ValueError("the reference runs without dropout")
    return cfg


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("vit", "gpt2"):
        sys.exit(__doc__)
    kind, weights_path, inputs_path, out_path = sys.argv[1:]
    meta, weights = safetensors_reference.read(weights_path)
    names = {name: arr for name, _, arr in weights}
    dtype = {"F64": torch.float64, "F32": torch.float32}[weights[0][1]]
    torch.set_default_dtype(dtype)
    lora_names = [n for n in names if n.endswith(".lora_A") or n.endswith(".lora_B")]
    scaling = 0.0
    if lora_names:
        rank = names[lora_names[0][:-len("lora_B")] + "lora_A"].shape[0]
        scaling = float(meta["lora.alpha"]) / rank

    if kind == "vit":
        model = ViT(config(meta, "vit."), names, scaling)
    else:
        model = Gpt(config(meta, "gpt."), names, scaling)
    state = {n: torch.from_numpy(np.array(a)) for n, a in names.items()}
    model.load_state_dict(state, strict=True)  # the names and shapes must be exactly the C++ model's
    model.requires_grad_(False)
    lora_params = {n: p for n, p in model.named_parameters() if n in lora_names}
    for p in lora_params.values():
        p.requires_grad_(True)

    _, inputs = safetensors_reference.read(inputs_path)
    inputs = {name: torch.from_numpy(np.array(arr)) for name, _, arr in inputs}
    if kind == "vit":
        x = inputs["pixels"].to(dtype).requires_grad_(True)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, inputs["labels"])
    else:
        ids = inputs["ids"]
        x = model.wte.weight[ids].detach().requires_grad_(True)
        logits = model.forward_embeds(x)
        v = logits.shape[-1]
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1))
    loss.backward()

    out = {"logits": logits.detach().numpy(), "loss": loss.detach().numpy(), "grad.input": x.grad.numpy()}
    for n, p in lora_params.items():
        out["grad." + n] = p.grad.numpy()
    write_safetensors(out_path, out)


if __name__ == "__main__":
    main()
