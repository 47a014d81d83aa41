#!/usr/bin/python3
"""Independent numpy reference for test_train: reads a graft-mlp checkpoint
(safetensors parsed by hand, config.json) and a CSV(.gz) data set, applies a
transform with numpy's own image functions, runs the forward pass in float64
and prints {"acc": ..., "loss": ..., "n": ...} for every row of the file.

usage: test_train_ref.py MODEL_DIR DATA.csv[.gz] TRANSFORM
"""
import gzip
import json
import math
import struct
import sys

import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def load_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        if t["dtype"] == "BF16":
            u = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype=np.dtype(DT[t["dtype"]]).newbyteorder("<"))
        out[name] = arr.astype(np.float64).reshape(t["shape"])
    return out


def main():
    model, data, transform = sys.argv[1:4]
    cfg = json.load(open(model + "/config.json"))
    w = load_safetensors(model + "/model.safetensors")
    opener = gzip.open if open(data, "rb").read(2) == b"\x1f\x8b" else open
    rows = np.array(
        [[float(v) for v in line.split(",")] for line in opener(data, "rt") if line.strip()]
    )
    x, y = rows[:, :-1], rows[:, -1].astype(int)
    lo, hi = x.min(), x.max()
    side = int(round(math.sqrt(x.shape[1])))
    img = x.reshape(-1, side, side)
    if transform == "rot90":  # a quarter turn clockwise
        x = np.stack([np.rot90(m, k=-1) for m in img]).reshape(len(x), -1)
    elif transform == "flip":
        x = np.stack([np.fliplr(m) for m in img]).reshape(len(x), -1)
    elif transform == "invert":
        x = lo + hi - x
    elif transform != "identity":
        raise SystemExit("unknown transform " + transform)
    h = (x - cfg.get("input_offset", 0.0)) * cfg.get("input_scale", 1.0)
    nl = len(cfg["layer_sizes"]) - 1
    erf = np.vectorize(math.erf)
    for layer in range(nl):
        h = h @ w["layers.%d.weight" % layer].T + w["layers.%d.bias" % layer]
        if layer + 1 < nl:
            act = cfg["activation"]
            if act == "relu":
                h = np.maximum(h, 0)
            elif act == "tanh":
                h = np.tanh(h)
            else:
                h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    m = h.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(h - m).sum(axis=1, keepdims=True)))[:, 0]
    loss = lse - h[np.arange(len(y)), y]
    acc = float((h.argmax(axis=1) == y).mean())
    print(json.dumps({"acc": acc, "loss": float(loss.mean()), "n": len(y)}))


main()
