#!/usr/bin/python3
# test_surgery_ref: an independent numpy reference for the deterministic merge
# methods of reference/merge-methods.md (linear, task_arithmetic, ties,
# breadcrumbs, breadcrumbs_ties, slerp, model_stock), used by
# test_surgery_merge.c. Reads safetensors with nothing but numpy; writes the
# expected tensors as an F32 safetensors file.
#
#   test_surgery_ref.py PARAMS_JSON OUT.safetensors BASE MODEL...
#
# PARAMS_JSON: {"method", "weights": [..], "densities": [..], "gamma",
# "lambda", "normalize", "t", "consensus"} (scalars per model). Exit 3 when
# numpy is missing (the caller skips).
import json
import math
import os
import struct
import sys

try:
    import numpy as np
except ImportError:
    sys.exit(3)


def read_st(path):
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    out = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        raw = b[8 + n + lo:8 + n + hi]
        dt = t["dtype"]
        if dt == "F32":
            x = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            x = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            x = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit("unsupported dtype " + dt)
        out[name] = x.reshape(t["shape"]).astype(np.float32)
    return out


def write_st(path, tensors):
    hdr, off, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        hdr[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def topk_mask(d, k):
    """Exactly k largest |d| (ties: lower index first), as a bool mask."""
    flat = np.abs(d.ravel())
    order = np.lexsort((np.arange(flat.size), -flat))  # |d| desc, then index asc
    m = np.zeros(flat.size, dtype=bool)
    m[order[:k]] = True
    return m.reshape(d.shape)


def magnitude(d, density):
    if density >= 1:
        return d
    return np.where(topk_mask(d, int(math.floor(density * d.size))), d, 0).astype(np.float32)


def breadcrumbs(d, density, gamma):
    n = d.size
    if density >= 1 and gamma <= 0:
        return d
    n_top = int(math.floor(gamma * n))
    n_keep = int(math.floor(density * n))
    n_bottom = n - n_keep - n_top
    if n_bottom < 0:
        n_top += n_bottom
    flat = np.abs(d.ravel())
    order = np.lexsort((np.arange(n), -flat))
    m = np.zeros(n, dtype=bool)
    m[order[n_top:n_top + n_keep]] = True
    return np.where(m.reshape(d.shape), d, 0).astype(np.float32)


def ties_mix(deltas, weights, consensus, normalize):
    u = np.stack([w * d.astype(np.float64) for w, d in zip(weights, deltas)])
    if consensus == "count":
        s = np.sign(u).sum(axis=0)
    else:
        s = u.sum(axis=0)
    elected = np.where(s >= 0, 1.0, -1.0)
    keep = (np.sign(u) == elected) & (u != 0)
    mixed = (u * keep).sum(axis=0)
    if normalize:
        w = np.array(weights, dtype=np.float64).reshape((-1,) + (1,) * deltas[0].ndim)
        div = (w * keep).sum(axis=0)
        div = np.where(np.abs(div) < 1e-8, 1.0, div)
        mixed = mixed / div
    return mixed


def slerp(t, v0, v1):
    a, b = v0.astype(np.float64).ravel(), v1.astype(np.float64).ravel()
    u0, u1 = a.copy(), b.copy()
    if np.linalg.norm(u0) > 1e-8:
        u0 /= np.linalg.norm(u0)
    if np.linalg.norm(u1) > 1e-8:
        u1 /= np.linalg.norm(u1)
    dot = float((u0 * u1).sum())
    if abs(dot) > 0.9995:
        r = (1 - t) * a + t * b
    else:
        th = math.acos(dot)
        r = math.sin((1 - t) * th) / math.sin(th) * a + math.sin(t * th) / math.sin(th) * b
    return r.reshape(v0.shape)


def model_stock(base, thetas):
    ds = [(x.astype(np.float64) - base).ravel() for x in thetas]
    cos = []
    for i in range(len(ds)):
        for j in range(i + 1, len(ds)):
            cos.append(float(ds[i] @ ds[j]) / (np.linalg.norm(ds[i]) * np.linalg.norm(ds[j])))
    c = sum(cos) / len(cos)
    n = len(ds)
    t = n * c / (1 + (n - 1) * c)
    return t * np.mean([x.astype(np.float64) for x in thetas], axis=0) + (1 - t) * base


def main():
    p = json.loads(sys.argv[1])
    out, base_path, model_paths = sys.argv[2], sys.argv[3], sys.argv[4:]
    base = read_st(base_path)
    models = [read_st(m) for m in model_paths]
    meth = p["method"]
    k = len(models)
    w = p.get("weights", [1.0] * k)
    dens = p.get("densities", [1.0] * k)
    gamma = p.get("gamma", 0.01)
    lam = p.get("lambda", 1.0)
    res = {}
    for name, b in base.items():
        thetas = [m[name] for m in models]
        deltas = [(x - b).astype(np.float32) for x in thetas]  # fp32, like graft
        if meth == "linear":
            r = sum(wi * x.astype(np.float64) for wi, x in zip(w, thetas))
            if p.get("normalize", True):
                r = r / sum(w)
        elif meth == "task_arithmetic":
            r = b + lam * sum(wi * d.astype(np.float64) for wi, d in zip(w, deltas))
        elif meth in ("ties", "breadcrumbs_ties"):
            if meth == "ties":
                sp = [magnitude(d, di) for d, di in zip(deltas, dens)]
            else:
                sp = [breadcrumbs(d, di, gamma) for d, di in zip(deltas, dens)]
            # mergekit's defaults: ties normalises, breadcrumbs_ties does not
            norm = p.get("normalize", meth == "ties")
            r = b + lam * ties_mix(sp, w, p.get("consensus", "sum"), norm)
        elif meth == "breadcrumbs":
            sp = [breadcrumbs(d, di, gamma) for d, di in zip(deltas, dens)]
            r = sum(wi * d.astype(np.float64) for wi, d in zip(w, sp))
            if p.get("normalize", False):
                r = r / sum(w)
            r = b + lam * r
        elif meth == "slerp":
            r = slerp(p["t"], b, thetas[0])
        elif meth == "model_stock":
            r = model_stock(b.astype(np.float64), thetas)
        else:
            raise SystemExit("no numpy reference for " + meth)
        res[name] = r.astype(np.float32)
    write_st(out, res)


main()
