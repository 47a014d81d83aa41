#!/usr/bin/python3
"""forward_ref: an independent, deliberately plain numpy (float64) forward pass
of the decoder-only models graft evaluates (llama, mistral, qwen2, gpt2), and a
maker of checkpoint variants (tied embeddings, q/k/v biases, llama3 rope
scaling, sliding window, bf16 weights, shards) derived from a golden model.

It is written from the published model definitions (Llama: RMSNorm, rotary
embeddings with rotate-half, grouped-query attention, SwiGLU; GPT-2: learned
positions, LayerNorm, Conv1D weights [in, out], gelu_new), not from graft's C
code. The unit tests first hold it against transformers' golden.json, then use
it as the reference for the variants.

usage:
  forward_ref.py validate GOLDEN_DIR            compare with GOLDEN_DIR/golden.json
  forward_ref.py nll MODEL_DIR IDS.json OUT.json  token NLLs for a list of sequences
                                                 (or the input_ids of a golden.json)
  forward_ref.py invfreq CONFIG.json            rotary inverse frequencies as JSON
  forward_ref.py variant SRC_DIR KIND OUT_DIR   KIND: tied qwen2 llama3 llama3-old
                                                 mistral-swa bf16 f16 sharded
"""
import json
import math
import os
import struct
import sys

import numpy as np

DT = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None,
      "I64": np.int64, "I32": np.int32, "U8": np.uint8}
DT_NAME = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = buf[base + b:base + e]
        shape = info["shape"]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(DT[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(shape).astype(np.float64)
    return out


def load_checkpoint(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for fn in files:
        w.update(read_safetensors(os.path.join(d, fn)))
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return cfg, w


def f32_to_bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    r[nan] = 0x7FC0
    return r


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype_name, shape, raw bytes)."""
    hdr, off, blobs = {}, 0, []
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def encode(a, dt):
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    if dt == "F32":
        return a32.astype("<f4").tobytes()
    if dt == "F16":
        return a32.astype("<f2").tobytes()
    if dt == "BF16":
        return f32_to_bf16_bits(a32).astype("<u2").tobytes()
    raise ValueError(dt)


# ---------------------------------------------------------------- the models

def rope_inv_freq(cfg, head_dim):
    rp = cfg.get("rope_parameters")
    if rp is None:
        rp = dict(cfg.get("rope_scaling") or {})
        rp.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
        if "type" in rp and "rope_type" not in rp:
            rp["rope_type"] = rp["type"]
    theta = float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = rp.get("rope_type", "default")
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(rp["factor"])
    if kind != "llama3":
        raise ValueError("rope type " + kind)
    # Llama 3.1: wavelengths longer than old_ctx/low_freq_factor are slowed by
    # `factor`, shorter than old_ctx/high_freq_factor are kept, and those in
    # between are interpolated linearly in old_ctx/wavelength.
    factor = float(rp["factor"])
    lo = float(rp["low_freq_factor"])
    hi = float(rp["high_freq_factor"])
    old = float(rp["original_max_position_embeddings"])
    out = np.empty_like(inv)
    for i, f in enumerate(inv):
        wavelen = 2 * math.pi / f
        if wavelen < old / hi:
            out[i] = f
        elif wavelen > old / lo:
            out[i] = f / factor
        else:
            s = (old / wavelen - lo) / (hi - lo)
            out[i] = (1 - s) * f / factor + s * f
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax_rows(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def attend(q, k, v, scale, window):
    """q (H, T, d), k/v (H, T, d) -> (T, H*d); causal, optional sliding window."""
    H, T, _ = q.shape
    out = np.zeros((T, H * q.shape[2]))
    for h in range(H):
        s = q[h] @ k[h].T * scale
        for t in range(T):
            for u in range(T):
                if u > t or (window and t - u >= window):
                    s[t, u] = -np.inf
        out[:, h * q.shape[2]:(h + 1) * q.shape[2]] = softmax_rows(s) @ v[h]
    return out


def llama_logits(cfg, w, ids):
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or C // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    L = cfg["num_hidden_layers"]
    mt = cfg["model_type"]
    T = len(ids)
    inv = rope_inv_freq(cfg, hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]  # (T, hd/2)
    cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)
    sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)

    def rope(x):  # (nh, T, hd)
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + rot * sin

    def lin(x, name, bias=False):
        y = x @ w[name + ".weight"].T
        if bias:
            y = y + w[name + ".bias"]
        return y

    qkv_bias = mt == "qwen2" or cfg.get("attention_bias", False)
    o_bias = mt != "qwen2" and cfg.get("attention_bias", False)
    mlp_bias = cfg.get("mlp_bias", False)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(L):
        p = "model.layers.%d." % i
        window = 0
        if mt == "mistral" and cfg.get("sliding_window"):
            window = cfg["sliding_window"]
        if mt == "qwen2" and cfg.get("use_sliding_window") and i >= cfg.get("max_window_layers", 0):
            window = cfg.get("sliding_window") or 0
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj", qkv_bias).reshape(T, H, hd).transpose(1, 0, 2)
        k = lin(h, p + "self_attn.k_proj", qkv_bias).reshape(T, KV, hd).transpose(1, 0, 2)
        v = lin(h, p + "self_attn.v_proj", qkv_bias).reshape(T, KV, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k = np.repeat(k, H // KV, axis=0)
        v = np.repeat(v, H // KV, axis=0)
        a = attend(q, k, v, 1.0 / math.sqrt(hd), window)
        x = x + lin(a, p + "self_attn.o_proj", o_bias)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, p + "mlp.gate_proj", mlp_bias)
        u = lin(h, p + "mlp.up_proj", mlp_bias)
        x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj", mlp_bias)
    x = rms_norm(x, w["model.norm.weight"], eps)
    tied = cfg.get("tie_word_embeddings", False)
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return x @ head.T


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2_logits(cfg, w, ids):
    pre = "transformer." if "transformer.wte.weight" in w else ""
    C = cfg["n_embd"]
    H = cfg["n_head"]
    hd = C // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    T = len(ids)
    x = w[pre + "wte.weight"][ids] + w[pre + "wpe.weight"][:T]
    for i in range(cfg["n_layer"]):
        p = pre + "h.%d." % i
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D: [in, out]
        q, k, v = (qkv[:, j * C:(j + 1) * C].reshape(T, H, hd).transpose(1, 0, 2) for j in range(3))
        scale = 1.0 / math.sqrt(hd) if cfg.get("scale_attn_weights", True) else 1.0
        if cfg.get("scale_attn_by_inverse_layer_idx", False):
            scale /= i + 1
        a = attend(q, k, v, scale, 0)
        x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        u = gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + u @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w[pre + "ln_f.weight"], w[pre + "ln_f.bias"], eps)
    head = w.get("lm_head.weight", w[pre + "wte.weight"])
    if cfg.get("tie_word_embeddings", True):
        head = w[pre + "wte.weight"]
    return x @ head.T


def logits_of(cfg, w, ids):
    if cfg["model_type"] in ("llama", "mistral", "qwen2"):
        return llama_logits(cfg, w, np.asarray(ids))
    if cfg["model_type"] == "gpt2":
        return gpt2_logits(cfg, w, np.asarray(ids))
    raise ValueError("model_type " + cfg["model_type"])


def token_nll(logits, ids):
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
    return [float(lse[t] - logits[t, ids[t + 1]]) for t in range(len(ids) - 1)]


# ---------------------------------------------------------------- commands

def cmd_validate(d):
    cfg, w = load_checkpoint(d)
    with open(os.path.join(d, "golden.json")) as f:
        g = json.load(f)
    worst, allnll = 0.0, []
    for s, ids in enumerate(g["input_ids"]):
        lg = logits_of(cfg, w, ids)
        nll = token_nll(lg, ids)
        allnll += nll
        worst = max(worst, max(abs(a - b) for a, b in zip(nll, g["token_nll"][s])))
        if s == 0:
            lerr = float(np.max(np.abs(lg - np.asarray(g["logits_seq0"]))))
    merr = abs(float(np.mean(allnll)) - g["mean_nll"])
    print("forward_ref %s: max |token_nll err| %.3g, |mean_nll err| %.3g, max |logit err| %.3g"
          % (d, worst, merr, lerr))
    return 0 if worst < 5e-5 and merr < 1e-6 and lerr < 1e-4 else 1


def cmd_nll(d, ids_path, out_path):
    cfg, w = load_checkpoint(d)
    with open(ids_path) as f:
        seqs = json.load(f)
    if isinstance(seqs, dict):  # a golden.json
        seqs = seqs["input_ids"]
    res = {"token_nll": [token_nll(logits_of(cfg, w, ids), ids) for ids in seqs]}
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


def save_variant(out, cfg, tensors, dtype="F32", shards=1):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    items = [(n, dtype, a.shape, encode(a, dtype)) for n, a in sorted(tensors.items())]
    if shards == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), items)
        return
    per = (len(items) + shards - 1) // shards
    wmap, total = {}, 0
    for s in range(shards):
        fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        part = items[s * per:(s + 1) * per]
        write_safetensors(os.path.join(out, fn), part)
        for n, _, _, raw in part:
            wmap[n] = fn
            total += len(raw)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total, "format": "pt"}, "weight_map": wmap}, f)


def cmd_variant(src, kind, out):
    cfg, w = load_checkpoint(src)
    rng = np.random.default_rng(12345)
    dtype, shards = "F32", 1
    if kind == "tied":
        # lm_head becomes the embedding matrix and disappears from the file.
        del w["lm_head.weight"]
        cfg["tie_word_embeddings"] = True
    elif kind == "qwen2":
        cfg["model_type"] = "qwen2"
        cfg["architectures"] = ["Qwen2ForCausalLM"]
        for k in list(w):
            if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                w[k[:-len("weight")] + "bias"] = rng.normal(0, 0.5, w[k].shape[0])
    elif kind in ("llama3", "llama3-old"):
        # Small original context so that every branch of the llama3 rule is
        # taken by some frequency of a 16-wide head.
        p = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 256}
        if kind == "llama3":
            cfg["rope_parameters"] = dict(p, rope_type="llama3", rope_theta=10000.0)
        else:
            cfg.pop("rope_parameters", None)
            cfg["rope_theta"] = 10000.0
            cfg["rope_scaling"] = dict(p, rope_type="llama3")
        cfg["max_position_embeddings"] = 2048
    elif kind == "mistral-swa":
        cfg["model_type"] = "mistral"
        cfg["architectures"] = ["MistralForCausalLM"]
        cfg["sliding_window"] = 16
    elif kind in ("bf16", "f16"):
        dtype = kind.upper()
        cfg["dtype"] = "bfloat16" if kind == "bf16" else "float16"
    elif kind == "sharded":
        shards = 3
    else:
        raise SystemExit("unknown variant " + kind)
    save_variant(out, cfg, w, dtype, shards)
    return 0


def cmd_invfreq(cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    print(json.dumps([float(x) for x in rope_inv_freq(cfg, hd)]))
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "invfreq":
        return cmd_invfreq(argv[2])
    if len(argv) == 3 and argv[1] == "validate":
        return cmd_validate(argv[2])
    if len(argv) == 5 and argv[1] == "nll":
        return cmd_nll(argv[2], argv[3], argv[4])
    if len(argv) == 5 and argv[1] == "variant":
        return cmd_variant(argv[2], argv[3], argv[4])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
