#!/usr/bin/python3
"""Independent numpy implementations used by test_phy_numpy as references.

  phy_reference.py ofdm IN OUT      IN: fft cp n_occ, then symbols (re im pairs); OUT: time samples (re im pairs)
  phy_reference.py aircomp IN OUT   IN: the round's inputs and noise (see test_phy_numpy.cpp); OUT: the estimate

Every number is text, one whitespace-separated token each, so nothing depends on binary layouts."""
import sys
import numpy as np


def read_tokens(path):
    with open(path) as f:
        return f.read().split()


def ofdm(tokens):
    fft, cp, n_occ = (int(t) for t in tokens[:3])
    v = np.array(tokens[3:], dtype=np.float64)
    x = (v[0::2] + 1j * v[1::2]).reshape(-1, n_occ)
    carriers = [k for k in range(-n_occ // 2, n_occ // 2 + 1) if k != 0]
    grid = np.zeros((x.shape[0], fft), dtype=np.complex128)
    grid[:, [k % fft for k in carriers]] = x
    t = np.fft.ifft(grid, axis=1) * np.sqrt(fft)
    return np.concatenate([t[:, fft - cp:], t], axis=1).reshape(-1)


def aircomp(tokens):
    """Truncated channel inversion round: the plan, superposition, noise and decoding, from the formulas."""
    it = iter(tokens)
    K, d, M, n_sup = (int(next(it)) for _ in range(4))
    budget, noise_var, g_th = (float(next(it)) for _ in range(3))
    support = np.array([int(next(it)) for _ in range(n_sup)], dtype=np.int64)
    weights = np.array([float(next(it)) for _ in range(K)])
    updates = np.array([float(next(it)) for _ in range(K * d)]).reshape(K, d)
    hv = np.array([float(next(it)) for _ in range(2 * K * M)])
    h = (hv[0::2] + 1j * hv[1::2]).reshape(K, M)
    n_sym = (n_sup + 1) // 2
    nv = np.array([float(next(it)) for _ in range(2 * n_sym)])
    noise = nv[0::2] + 1j * nv[1::2]

    rms = np.sqrt(np.mean(updates[:, support] ** 2, axis=1))
    scale = np.sqrt(2.0) * np.max(np.abs(weights) * rms)
    v = 2.0 * (weights * rms / scale) ** 2                   # per-symbol power of each device
    kept = np.abs(h) ** 2 >= g_th * np.mean(np.abs(h) ** 2, axis=1, keepdims=True)  # relative to mean gain
    inv = np.where(kept, 1.0 / np.where(kept, np.abs(h) ** 2, 1.0), 0.0)
    eta = np.min(budget * M / (v * inv.sum(axis=1)))          # the largest eta every budget allows
    b = np.where(kept, np.sqrt(eta) / np.where(kept, h, 1.0), 0.0)

    def pack(x):
        x = np.concatenate([x, np.zeros(len(x) % 2)])
        return x[0::2] + 1j * x[1::2]

    y = np.zeros(n_sym, dtype=np.complex128)
    m = np.arange(n_sym) % M
    for k in range(K):
        s = pack(weights[k] * updates[k, support] / scale)
        y += h[k, m] * b[k, m] * s
    r = (y + noise) / np.sqrt(eta)
    vals = np.stack([r.real, r.imag], axis=1).reshape(-1)[:n_sup] * scale
    est = np.zeros(d)
    est[support] = vals
    return est


if __name__ == "__main__":
    kind, inp, out = sys.argv[1:4]
    tokens = read_tokens(inp)
    if kind == "ofdm":
        y = ofdm(tokens)
        vals = np.stack([y.real, y.imag], axis=1).reshape(-1)
    else:
        vals = aircomp(tokens)
    np.savetxt(out, vals, fmt="%.17g")
