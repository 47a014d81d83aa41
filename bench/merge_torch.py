#!/usr/bin/python3
# merge_torch: the TIES merge of bench_merge written plainly in PyTorch, the
# way mergekit does it per tensor (argsort for the magnitude trim, sign of
# the weighted sum, division by the kept weights), as the peer graft is
# measured against. Reads safetensors with plain file reads (one tensor at a
# time, nothing kept mapped), writes one bf16 model.safetensors.
#
#   merge_torch.py [--threads T] [--density D] --out DIR BASE FT1 FT2 FT3
import argparse
import json
import os
import struct

import numpy as np
import torch

WEIGHTS = [1.0, 0.7, 0.5]


def header(path):
    f = open(os.path.join(path, "model.safetensors"), "rb")
    n = struct.unpack("<Q", f.read(8))[0]
    return f, 8 + n, json.loads(f.read(n))


def load(fh, t):
    f, start, hdr = fh
    lo, hi = hdr[t]["data_offsets"]
    assert hdr[t]["dtype"] == "BF16"
    buf = np.empty((hi - lo) // 2, dtype=np.int16)
    f.seek(start + lo)
    f.readinto(buf)
    return torch.from_numpy(buf).view(torch.bfloat16).view(hdr[t]["shape"])


def magnitude(d, density):
    if density >= 1:
        return d
    k = int(density * d.numel())
    w = d.abs().view(-1)
    # a stable sort: ties at the cut go to the lower index, as in graft
    topk = torch.sort(w, descending=True, stable=True).indices[:k]
    mask = torch.zeros_like(w)
    mask[topk] = 1
    return d * mask.view_as(d)


def ties(base, models, density):
    deltas = [magnitude(m.float() - base, density) for m in models]
    w = torch.tensor(WEIGHTS, dtype=torch.float32).view(-1, *([1] * base.dim()))
    u = torch.stack(deltas) * w
    sign = u.sum(dim=0).sign()
    sign[sign == 0] = 1
    keep = (u.sign() == sign) & (u != 0)
    mixed = (u * keep).sum(dim=0)
    div = (w * keep).sum(dim=0)
    div[div.abs() < 1e-8] = 1
    return base + mixed / div


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    ap.add_argument("paths", nargs=4)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    fhs = [header(p) for p in a.paths]
    names = sorted(k for k in fhs[0][2] if k != "__metadata__")
    hdr, off = {}, 0
    for n in names:
        size = fhs[0][2][n]["data_offsets"][1] - fhs[0][2][n]["data_offsets"][0]
        hdr[n] = {"dtype": "BF16", "shape": fhs[0][2][n]["shape"], "data_offsets": [off, off + size]}
        off += size
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as out:
        out.write(struct.pack("<Q", len(h)) + h)
        for n in names:
            base = load(fhs[0], n).float()
            models = [load(fh, n) for fh in fhs[1:]]
            merged = ties(base, models, a.density).to(torch.bfloat16)
            out.write(merged.view(torch.int16).numpy().tobytes())


main()
