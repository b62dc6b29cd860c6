"""Feature maps phi for the keys and queries of fast-weight layers (applied over the last dimension).

Stateless functions:
  * ``elu1(z) = ELU(z) + 1``                      (positive; Katharopoulos et al. 2020)
  * ``sum_norm(z) = z / sum_i z_i``               ("sn"; the DeltaNet normalisation)
  * ``elu1_sn(z) = sum_norm(elu1(z))``            (DeltaNet's default for q and k)
  * ``dpfp(x, nu)``: ``r(x) = [ReLU(x), ReLU(-x)]``, ``phi(x) = concat_{j=1..nu} r(x) * roll(r(x), j)``
    (2 d nu dims; ``roll`` is ``torch.roll`` along the feature dim, so ``roll(r, j)[i] = r[i - j]``).
    Not normalised; the ``"dpfp"`` map of :func:`build_feature_map` applies ``sum_norm`` afterwards.
  * ``favor(x, omega)``: FAVOR+ positive random features (Choromanski et al. 2021, "Rethinking
    Attention with Performers"), ``[exp(Omega x - |x|^2/2), exp(-Omega x - |x|^2/2)] / sqrt(2m)``
    (2m dims). With Gaussian rows ``E[favor(q) . favor(k)] = exp(q . k)``; no ``d^{-1/4}`` temperature
    is applied here (scale the inputs if you want the softmax-attention kernel ``exp(q.k/sqrt(d))``).
  * ``orthogonal_gaussian(m, d)``: the random matrix Omega (m x d): stacked blocks of d orthonormal
    rows (QR of a Gaussian matrix), each row rescaled by the norm of an independent d-dim Gaussian
    vector (chi-distributed with d degrees of freedom), so every row is marginally N(0, I_d).
  * ``softmax(z)``: ``torch.softmax`` over the last dim.

Modules (``nn.Module`` with ``in_dim``/``out_dim``; use :func:`build_feature_map`):
``Elu1``, ``Elu1SumNorm``, ``Softmax``, ``Identity``, ``DPFP(d, nu, normalize)`` and
``FAVORPlus(d, m, normalize, seed, orthogonal)`` (Omega is a persistent buffer; ``redraw()`` draws a
new one from the map's own seeded generator).

Names for :func:`build_feature_map` / :func:`feature_dim` and their options:

=========== ======================================================== ==========
name        options                                                  out dim
=========== ======================================================== ==========
``elu1-sn`` (none)                                                   d
``elu1``    (none)                                                   d
``dpfp``    ``nu=1``, ``normalize=True`` (sum_norm after)            2 d nu
``favor``   ``m=d``, ``normalize=True``, ``seed=None``,              2 m
            ``orthogonal=True``
``softmax`` (none)                                                   d
``identity`` (none)                                                  d
=========== ======================================================== ==========
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._utils import check_positive_int

__all__ = [
    "FEATURE_MAPS",
    "elu1",
    "sum_norm",
    "elu1_sn",
    "dpfp",
    "favor",
    "orthogonal_gaussian",
    "softmax",
    "FeatureMap",
    "Elu1",
    "Elu1SumNorm",
    "Softmax",
    "Identity",
    "DPFP",
    "FAVORPlus",
    "feature_dim",
    "build_feature_map",
]

FEATURE_MAPS = ("elu1-sn", "elu1", "dpfp", "favor", "softmax", "identity")


# ----------------------------------------------------------------------------------------------
# stateless functions


def elu1(z: torch.Tensor) -> torch.Tensor:
    """``ELU(z) + 1`` (strictly positive)."""
    return F.elu(z) + 1.0


def sum_norm(z: torch.Tensor) -> torch.Tensor:
    """``z / z.sum(-1, keepdim=True)`` (for positive z: entries sum to one)."""
    return z / z.sum(-1, keepdim=True)


def elu1_sn(z: torch.Tensor) -> torch.Tensor:
    """``sum_norm(elu1(z))``: DeltaNet's default feature map for queries and keys."""
    return sum_norm(elu1(z))


def softmax(z: torch.Tensor) -> torch.Tensor:
    """``torch.softmax`` over the last dimension."""
    return torch.softmax(z, dim=-1)


def dpfp(x: torch.Tensor, nu: int = 1) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag et al. 2021), ``[..., d] -> [..., 2 d nu]``.

    ``r = [ReLU(x), ReLU(-x)]``; ``phi = concat_{j=1..nu} r * roll(r, j)``. Not sum-normalised."""
    check_positive_int("nu", nu)
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([r * torch.roll(r, shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)


def favor(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """FAVOR+ positive random features, ``[..., d] -> [..., 2m]`` for ``omega`` of shape ``[m, d]``.

    ``[exp(Omega x - |x|^2/2), exp(-Omega x - |x|^2/2)] / sqrt(2m)``; an unbiased estimate of
    ``exp(q . k)`` when the rows of Omega are N(0, I) (marginally, as for :func:`orthogonal_gaussian`)."""
    if omega.dim() != 2 or omega.shape[1] != x.shape[-1]:
        raise ValueError(f"favor: omega must have shape [m, {x.shape[-1]}], got {tuple(omega.shape)}")
    m = omega.shape[0]
    wx = x @ omega.to(x.dtype).t()  # [..., m]
    half_sq = 0.5 * (x * x).sum(-1, keepdim=True)
    feats = torch.cat([wx - half_sq, -wx - half_sq], dim=-1)
    return torch.exp(feats - 0.5 * math.log(2 * m))


def orthogonal_gaussian(m: int, d: int, *, generator: torch.Generator | None = None,
                        orthogonal: bool = True, dtype: torch.dtype = torch.float32,
                        device=None) -> torch.Tensor:
    """An ``m x d`` random matrix whose rows are marginally N(0, I_d).

    ``orthogonal=True`` (FAVOR+'s ORF): blocks of d exactly orthogonal rows (from the QR of a d x d
    Gaussian matrix; the last block is truncated), each row rescaled by the norm of an independent
    d-dim Gaussian vector (chi(d) distributed). ``orthogonal=False``: i.i.d. Gaussian rows."""
    check_positive_int("m", m)
    check_positive_int("d", d)
    g = dict(generator=generator, dtype=torch.float64)
    if not orthogonal:
        return torch.randn(m, d, **g).to(dtype=dtype, device=device)
    nblocks = -(-m // d)
    qmat, rmat = torch.linalg.qr(torch.randn(nblocks, d, d, **g))  # batched: one QR per block
    # sign fix so each Q is Haar-distributed (QR alone is biased by its sign convention)
    sign = torch.sign(torch.diagonal(rmat, dim1=-2, dim2=-1))
    sign[sign == 0] = 1.0
    qmat = qmat * sign[:, None, :]
    omega = qmat.transpose(-1, -2).reshape(nblocks * d, d)[:m]  # rows of each block orthonormal
    norms = torch.randn(m, d, **g).norm(dim=1)
    return (omega * norms[:, None]).to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------
# modules


class FeatureMap(nn.Module):
    """Base class: maps ``[..., in_dim] -> [..., out_dim]``."""

    name: str = ""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"{self.name} feature map expects last dim {self.in_dim}, got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"


class Elu1(FeatureMap):
    name = "elu1"

    def __init__(self, d: int):
        super().__init__(d, d)

    def forward(self, x):
        self._check(x)
        return elu1(x)


class Elu1SumNorm(FeatureMap):
    name = "elu1-sn"

    def __init__(self, d: int):
        super().__init__(d, d)

    def forward(self, x):
        self._check(x)
        return elu1_sn(x)


class Softmax(FeatureMap):
    name = "softmax"

    def __init__(self, d: int):
        super().__init__(d, d)

    def forward(self, x):
        self._check(x)
        return softmax(x)


class Identity(FeatureMap):
    name = "identity"

    def __init__(self, d: int):
        super().__init__(d, d)

    def forward(self, x):
        self._check(x)
        return x


class DPFP(FeatureMap):
    """DPFP_nu, then (by default) sum normalisation. Output dim ``2 d nu``.

    Note: an all-zero input gives all-zero features, which ``normalize=True`` turns into NaN (0/0),
    as in the reference code; layers feed it projections that are almost surely non-zero."""

    name = "dpfp"

    def __init__(self, d: int, nu: int = 1, normalize: bool = True):
        check_positive_int("nu", nu)
        super().__init__(d, 2 * d * nu)
        self.nu = nu
        self.normalize = bool(normalize)

    def forward(self, x):
        self._check(x)
        y = dpfp(x, self.nu)
        return sum_norm(y) if self.normalize else y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nu={self.nu}, normalize={self.normalize}"


class FAVORPlus(FeatureMap):
    """FAVOR+ positive (orthogonal) random features, then (by default) sum normalisation. Output ``2m``.

    With ``normalize=True`` the result is computed as ``softmax([Omega x, -Omega x])``, which equals
    ``sum_norm(favor(x, Omega))`` exactly but cannot underflow or overflow for large ``|x|``.

    ``omega`` ([m, d]) is a persistent buffer (saved in checkpoints). ``seed`` makes the draws
    reproducible: the map owns a ``torch.Generator`` seeded with it, and :meth:`redraw` draws the next
    matrix from that generator (or from ``generator`` if given). ``seed=None`` uses torch's global RNG."""

    name = "favor"

    def __init__(self, d: int, m: int | None = None, normalize: bool = True, seed: int | None = None,
                 orthogonal: bool = True):
        m = d if m is None else m
        check_positive_int("m", m)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        super().__init__(d, 2 * m)
        self.m = m
        self.normalize = bool(normalize)
        self.orthogonal = bool(orthogonal)
        self.seed = seed
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.register_buffer("omega", orthogonal_gaussian(m, d, generator=self._generator, orthogonal=orthogonal))

    @torch.no_grad()
    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draws a new Omega in place (same dtype and device)."""
        gen = generator if generator is not None else self._generator
        new = orthogonal_gaussian(self.m, self.in_dim, generator=gen, orthogonal=self.orthogonal)
        self.omega.copy_(new.to(self.omega.dtype))

    def forward(self, x):
        self._check(x)
        if self.normalize:
            # sn(favor(x)) == softmax([Omega x, -Omega x]): the factor exp(-|x|^2/2)/sqrt(2m) is shared
            # by all features of x and cancels, so compute it without under/overflow.
            wx = x @ self.omega.to(x.dtype).t()
            return torch.softmax(torch.cat([wx, -wx], dim=-1), dim=-1)
        return favor(x, self.omega)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", m={self.m}, normalize={self.normalize}, "
                                       f"orthogonal={self.orthogonal}, seed={self.seed}")


# ----------------------------------------------------------------------------------------------
# factory


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


_OPTIONS = {
    "elu1-sn": {},
    "elu1": {},
    "softmax": {},
    "identity": {},
    "dpfp": {"nu": 1, "normalize": True},
    "favor": {"m": None, "normalize": True, "seed": None, "orthogonal": True},
}


def _resolve(name: str, d, opts: dict) -> dict:
    if not isinstance(name, str) or name not in _OPTIONS:
        raise ValueError(f"feature map name must be one of {list(FEATURE_MAPS)}, got {name!r}")
    check_positive_int("d", d)
    allowed = _OPTIONS[name]
    for key, value in opts.items():
        if key not in allowed:
            raise ValueError(
                f"feature map {name!r} has no option {key!r} (given {key}={value!r}); "
                f"its options are {sorted(allowed) or 'none'}"
            )
    out = {**allowed, **opts}
    if name == "dpfp":
        check_positive_int("nu", out["nu"])
        _check_bool("normalize", out["normalize"])
    elif name == "favor":
        if out["m"] is None:
            out["m"] = d
        check_positive_int("m", out["m"])
        _check_bool("normalize", out["normalize"])
        _check_bool("orthogonal", out["orthogonal"])
        if out["seed"] is not None and (not isinstance(out["seed"], int) or isinstance(out["seed"], bool)):
            raise ValueError(f"seed must be an int or None, got {out['seed']!r}")
    return out


def feature_dim(name: str, d: int, **opts) -> int:
    """The output dimension of feature map ``name`` on ``d``-dim inputs."""
    o = _resolve(name, d, opts)
    if name == "dpfp":
        return 2 * d * o["nu"]
    if name == "favor":
        return 2 * o["m"]
    return d


def build_feature_map(name: str, d: int, **opts) -> FeatureMap:
    """A feature-map module for ``d``-dim inputs (see the module docstring for names and options)."""
    o = _resolve(name, d, opts)
    if name == "elu1-sn":
        return Elu1SumNorm(d)
    if name == "elu1":
        return Elu1(d)
    if name == "softmax":
        return Softmax(d)
    if name == "identity":
        return Identity(d)
    if name == "dpfp":
        return DPFP(d, **o)
    return FAVORPlus(d, **o)
