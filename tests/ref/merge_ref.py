#!/usr/bin/python3
"""Independent numpy reference for graft's pruning and merging kernels.

Written from reference/merge-methods.md (and DESIGN.md section 8 for the
random generator), not from the C code. Used by tests/unit/test_prune.c and
tests/unit/test_merge.c:

    merge_ref.py DIR

reads DIR/cases.jsonl (one JSON object per line) and writes, for each case,
DIR/<id>.out.f32 (raw little-endian float32). Inputs are raw files in the
case's dtype: f32 (float32), bf16 (bfloat16 bit patterns) or f16 (IEEE
half); they are converted to float32 here, independently of the C code.

Conventions graft documents beyond the formulas (mirrored here):
* random choices: element i of a tensor draws u_i from Philox4x32-10 keyed by
  key(seed, tensor name, model index), counter i // 4, word i % 4, as
  (word >> 8) * 2^-24; kept iff u_i < p (compared in float64);
* dare rescale inverse multiplies kept values by float32(1/d); della divides
  in float64 by p and rounds once;
* top-k order: |x| descending, ties by lower index;
* della: descending position pos in the row, r = (m-1-pos)/(m-1), r = 1/2
  for rows of one element;
* pcb: a constant row normalises to 0 (intra) / gives S = 0 (scale); the
  balance score is computed in float64 and rounded to float32 once.
"""
import json
import math
import sys

import numpy as np

M64 = (1 << 64) - 1


# ---------- the counter-based generator (DESIGN.md section 8) ----------

def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def rng_key(seed, tag, index):
    h = 0xCBF29CE484222325
    for b in tag.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return _mix64(_mix64((seed + 0x9E3779B97F4A7C15) & M64) ^ _mix64(h)
                  ^ _mix64((index * 0xD1B54A32D192ED03 + 1) & M64))


def philox4x32_10(key, counters):
    """Philox4x32-10 (Salmon et al. 2011) for 64-bit counters (c0, c1 =
    low/high words, c2 = c3 = 0); returns a (4, len) uint64 array of words."""
    m32 = np.uint64(0xFFFFFFFF)
    ctr = counters.astype(np.uint64)
    c = [ctr & m32, ctr >> np.uint64(32), np.zeros_like(ctr), np.zeros_like(ctr)]
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & m32,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & m32]
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return np.stack(c)


def uniforms(key, n):
    blocks = (n + 3) // 4
    w = philox4x32_10(key, np.arange(blocks, dtype=np.uint64))
    words = w.T.reshape(-1)[:n]  # element i: block i // 4, word i % 4
    return (words >> np.uint64(8)).astype(np.float64) * 2.0 ** -24


# ---------- dtypes ----------

def load(path, dtype, n):
    if dtype == "f32":
        a = np.fromfile(path, dtype="<f4")
    elif dtype == "bf16":
        a = (np.fromfile(path, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "f16":
        a = np.fromfile(path, dtype="<f2").astype(np.float32)
    else:
        raise ValueError(dtype)
    assert a.size == n, (path, a.size, n)
    return a.astype(np.float32)


# ---------- sparsifiers ----------

def desc_order(x):
    """Indices by |x| descending, ties by lower index."""
    return np.argsort(-np.abs(x.astype(np.float64)), kind="stable")


def l1_rescale(orig, masked):
    before = float(np.sum(np.abs(orig.astype(np.float64))))
    after = float(np.sum(np.abs(masked.astype(np.float64))))
    if before < 1e-7 or after < 1e-7:
        return masked
    return (masked * np.float32(before / after)).astype(np.float32)


def default_rescale(method):
    return "inverse" if method in ("dare", "della") else "none"


def prune(x, method, density, gamma, epsilon, q, rescale, key, row_len):
    x = x.astype(np.float32)
    n = x.size
    if rescale in (None, "default"):
        rescale = default_rescale(method)
    if method == "none" or density >= 1 or n == 0:
        return x.copy()
    if method in ("dare", "drop", "darex"):
        u = uniforms(key, n)
        keep = u < density
        if method == "darex":
            scale = np.float32(1.0 / q)
        elif method == "dare" and rescale == "inverse":
            scale = np.float32(1.0 / density)
        else:
            scale = np.float32(1.0)
        out = np.where(keep, x * scale, np.float32(0)).astype(np.float32)
    elif method in ("magnitude", "breadcrumbs"):
        n_keep = int(math.floor(density * n))
        n_top = 0
        if method == "breadcrumbs":
            n_top = int(math.floor(gamma * n))
            n_bottom = n - n_keep - n_top
            if n_bottom < 0:
                n_top += n_bottom
        order = desc_order(x)
        out = np.zeros_like(x)
        sel = order[n_top:n_top + n_keep]
        out[sel] = x[sel]
    elif method == "della":
        u = uniforms(key, n)
        out = np.zeros_like(x)
        m = row_len
        for r0 in range(0, n, m):
            row = x[r0:r0 + m]
            pos = np.empty(m, dtype=np.int64)
            pos[desc_order(row)] = np.arange(m)
            r = (m - 1 - pos) / (m - 1) if m > 1 else np.full(m, 0.5)
            p = (density - epsilon) + 2.0 * epsilon * r
            keep = u[r0:r0 + m] < p
            if rescale == "inverse":
                vals = (row.astype(np.float64) / p).astype(np.float32)
            else:
                vals = row
            out[r0:r0 + m] = np.where(keep, vals, np.float32(0))
    else:
        raise ValueError(method)
    if rescale == "l1":
        out = l1_rescale(x, out)
    return out.astype(np.float32)


# ---------- merges ----------

SPARSIFIER = {
    "ties": "magnitude", "dare_ties": "dare", "dare_linear": "dare",
    "breadcrumbs": "breadcrumbs", "breadcrumbs_ties": "breadcrumbs",
    "della": "della", "della_linear": "della", "task_arithmetic": "none",
}
ELECTION = {"ties", "dare_ties", "breadcrumbs_ties", "della"}


def merge(c, base, xs):
    method = c["method"]
    models = c["models"]
    f32 = np.float32
    if method == "linear":
        th = [x + base if c["kind"] == "deltas" else x for x in xs]
        acc = np.zeros_like(th[0])
        sw = f32(0)
        for m, t in zip(models, th):
            acc = acc + f32(m["weight"]) * t
            sw = f32(sw + f32(m["weight"]))
        return acc / sw if c["normalize"] else acc
    if method == "slerp":
        v0 = base.astype(np.float64)
        v1 = (xs[0] + base if c["kind"] == "deltas" else xs[0]).astype(np.float64)
        t = c["t"]
        n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
        u0 = v0 / n0 if n0 > 1e-8 else v0
        u1 = v1 / n1 if n1 > 1e-8 else v1
        dot = float(np.sum(u0 * u1))
        if abs(dot) > 0.9995:
            return ((1 - t) * v0 + t * v1).astype(np.float32)
        th = math.acos(dot)
        s = math.sin(th)
        return (math.sin((1 - t) * th) / s * v0 + math.sin(t * th) / s * v1).astype(np.float32)
    deltas = [(x - base).astype(np.float32) if c["kind"] == "models" else x for x in xs]
    if method == "model_stock":
        N = len(deltas)
        d64 = [d.astype(np.float64) for d in deltas]
        cs = []
        for i in range(N):
            for j in range(i + 1, N):
                npr = np.linalg.norm(d64[i]) * np.linalg.norm(d64[j])
                cs.append(min(1.0, max(-1.0, float(np.dot(d64[i], d64[j])) / max(npr, 1e-6))))
        cos = sum(cs) / len(cs)
        t = N * cos / (1 + (N - 1) * cos)
        mean = sum(base.astype(np.float64) + d for d in d64) / N
        return (t * mean + (1 - t) * base.astype(np.float64)).astype(np.float32)
    if method == "pcb":
        return pcb(base, deltas, c["pcb_ratio"], c["lambda"])
    sp = SPARSIFIER[method]
    pruned = []
    for m, d in zip(models, deltas):
        key = rng_key(c["seed"], c["name"], m["rng_index"])
        pruned.append(prune(d, sp, m["density"], m["gamma"], m["epsilon"], 0.0,
                            c.get("rescale"), key, c["row_len"]))
    w = [f32(m["weight"]) for m in models]
    u = [wi * p for wi, p in zip(w, pruned)]
    if method in ELECTION:
        s = np.zeros_like(base)
        for ui in u:
            s = s + (ui if c["consensus"] == "sum" else np.sign(ui).astype(np.float32))
        pos = s >= 0
        mixed = np.zeros_like(base)
        div = np.zeros_like(base)
        for wi, ui in zip(w, u):
            keep = np.where(pos, ui > 0, ui < 0)
            mixed = mixed + np.where(keep, ui, f32(0))
            div = div + np.where(keep, wi, f32(0))
        if c["normalize"]:
            mixed = mixed / np.where(div == 0, f32(1), div)
    else:
        mixed = np.zeros_like(base)
        for ui in u:
            mixed = mixed + ui
        if c["normalize"]:
            sw = f32(0)
            for wi in w:
                sw = f32(sw + wi)
            mixed = mixed / (f32(1) if abs(sw) < 1e-8 else sw)
    if c["lambda"] != 1:
        mixed = mixed * f32(c["lambda"])
    return (base + mixed).astype(np.float32)


def minmax(x, lo, hi):
    if hi > lo:
        return (x - lo) / (hi - lo)
    return np.zeros_like(x)


def pcb(base, deltas, ratio, lam):
    """PCB-Merging (Du et al. 2024) on the stacked task vectors, one tensor
    as the n x D matrix: clip |T| at the 0.0001 / 0.9999 row quantiles,
    intra = exp(n * minmax(clip|T|)^2), inter = tanh(T * sum_j T_j), keep the
    top `ratio` of beta = intra * inter per row, min-max scale to S,
    merged = sum sign(T) clip|T| S / sum S."""
    T = np.stack(deltas).astype(np.float32)
    n, D = T.shape
    A = np.abs(T)
    srt = np.sort(A, axis=1)
    lo = srt[:, int(D * 0.0001)]
    hi = srt[:, max(0, int(D * (1 - 0.0001) - 1))]
    C = np.clip(A, lo[:, None], hi[:, None])
    tot = np.sum(T.astype(np.float64), axis=0)
    beta = np.empty_like(T)
    for i in range(n):
        s = minmax(C[i].astype(np.float64), float(lo[i]), float(hi[i]))
        beta[i] = (np.exp(n * s * s) * np.tanh(T[i].astype(np.float64) * tot)).astype(np.float32)
    S = np.zeros((n, D), dtype=np.float64)
    for i in range(n):
        j = min(D - 1, max(0, int(D * (1 - ratio))))
        q = float(np.sort(beta[i])[j])
        mx = float(beta[i].max())
        b = beta[i].astype(np.float64)
        S[i] = np.where(b > q, (b - q) / (mx - q) if mx > q else 0.0, 0.0)
    num = np.sum(np.sign(T) * C.astype(np.float64) * S, axis=0)
    den = np.maximum(np.sum(S, axis=0), 1e-12)
    return (base.astype(np.float64) + lam * num / den).astype(np.float32)


def main():
    d = sys.argv[1]
    with open(d + "/cases.jsonl") as f:
        cases = [json.loads(line) for line in f if line.strip()]
    for c in cases:
        n = c["n"]
        xs = [load(d + "/" + p, c["dtype"], n) for p in c["inputs"]]
        if c["op"] == "prune":
            key = rng_key(c["seed"], c["name"], c["index"])
            out = prune(xs[0], c["method"], c["density"], c["gamma"], c["epsilon"], c["q"],
                        c["rescale"], key, c["row_len"])
        elif c["op"] == "uniform":
            out = uniforms(rng_key(c["seed"], c["name"], c["index"]), n).astype(np.float32)
        else:
            base = load(d + "/" + c["base"], c["dtype"], n) if c.get("base") else None
            out = merge(c, base, xs)
        np.asarray(out, dtype="<f4").tofile(d + "/" + c["id"] + ".out.f32")


if __name__ == "__main__":
    main()
