#!/usr/bin/python3
"""evaluate_torch: the peer of bench_evaluate — the same fp32 llama forward
pass (RMSNorm, rotary embeddings, grouped-query causal attention with a masked
softmax, SwiGLU, lm_head, log-softmax of the next token) written plainly in
PyTorch, timed on the same checkpoint and the same token windows.

usage: evaluate_torch.py MODEL_DIR TOKENS.bin SEQ_LEN BATCH WINDOWS THREADS
TOKENS.bin holds uint16 ids: (WINDOWS + 1) batches of BATCH windows of
SEQ_LEN tokens; the first batch warms up. Prints one JSON line:
{"tokens_per_s": ..., "mean_nll": ..., "seconds": ..., "cpu_seconds": ...,
"threads": ...} (cpu_seconds: CPU time of all the process's threads).
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch


def load(model_dir):
    with open(model_dir + "/config.json") as f:
        cfg = json.load(f)
    with open(model_dir + "/model.safetensors", "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    w = {}
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        a = np.frombuffer(buf, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
        w[name] = torch.from_numpy(a.reshape(info["shape"]).copy())
    return cfg, w


def main(argv):
    model_dir, tok_path = argv[1], argv[2]
    T, B, W, threads = (int(x) for x in argv[3:7])
    torch.set_num_threads(threads)
    cfg, w = load(model_dir)
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or C // H
    L = cfg["num_hidden_layers"]
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    ids = np.fromfile(tok_path, dtype="<u2").astype(np.int64).reshape(W + 1, B, T)

    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([ang.sin(), ang.sin()], -1)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    def rope(x):
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(batch):  # (B, T) -> sum of next-token NLLs, count
        x = w["model.embed_tokens.weight"][batch]
        for i in range(L):
            p = "model.layers.%d." % i
            h = rms(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            s = s.masked_fill(mask, float("-inf")).softmax(-1)
            a = (s @ v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + a @ w[p + "self_attn.o_proj.weight"].T
            h = rms(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
        x = rms(x, w["model.norm.weight"])
        logits = x[:, :-1] @ w["lm_head.weight"].T
        lp = torch.log_softmax(logits, -1)
        tgt = batch[:, 1:]
        return -lp.gather(-1, tgt.unsqueeze(-1)).sum().item(), tgt.numel()

    with torch.inference_mode():
        forward(torch.from_numpy(ids[0]))  # warm-up
        nll, n = 0.0, 0
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(1, W + 1):
            s, c = forward(torch.from_numpy(ids[k]))
            nll += s
            n += c
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"tokens_per_s": n / dt, "mean_nll": nll / n, "seconds": dt, "cpu_seconds": cpu,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
