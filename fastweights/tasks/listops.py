"""Sequential ListOps (Nangia & Bowman 2018; the variant of Irie et al. 2021) at an exact depth.

An example is a prefix expression such as ``[MAX 4 [MIN 1 0 ] 9 ]`` (tokens ``[MAX``, ``4``, ``[MIN``,
``1``, ``0``, ``]``, ``9``, ``]``) and its value, an integer 0..9. Operators:

- ``MIN``, ``MAX``, ``FIRST`` (the default set);
- ``MED``: the median; for an even number of arguments the *lower* median, ``sorted(args)[(n - 1) // 2]``
  (the LRA / reference code uses ``int(np.median(args))``, the floor of the mean of the two middle
  values, which is not always an argument: for ``[MED 3 6 ]`` it gives 4, we give 3);
- ``SM``: the sum modulo 10.

Tree distribution (as in the reference generator): the root is an operator; below the root a node is a
leaf (a value 0..9, uniform) with probability 0.75, otherwise an operator; every operator has 2..5
arguments (uniform) and a uniform operator name. ``depth`` is the maximum bracket nesting: a bare root
``[MAX 1 2 ]`` has depth 1. Trees deeper than ``depth`` are rejected, never truncated.

Depth conventions (:data:`DEPTH_CONVENTIONS`, :func:`nesting_depth`): ``"nesting"`` (the default) is the
bracket nesting above; ``"reference"`` counts levels as the reference generators do, the leaves included,
so it is the nesting plus one (:func:`reference_depth_of`). In the generator of Irie et al.
(IDSIA/recurrent-fwp, ``algorithmic/utils/nyu_listops.py``, a fork of Nangia & Bowman's
``python/spinn/data/listops/make_data.py`` in nyu-mll/spinn) ``generate_tree(1)`` starts the root at level 1,
a leaf returns the level it sits at, an operator the deepest level below it, and ``--only_depth D`` keeps
the trees whose deepest leaf is at level D: ``[MAX 1 2 ]`` is depth 2 there, nesting 1 here. (Nangia &
Bowman's original counts the same way: its ``MAX_DEPTH`` is the deepest level a leaf may take.) Note that
the same repository's ``algorithmic/README.md`` makes the paper's data sets with ``--only_depth 11`` ("data
for depth 10") and ``--only_depth 16`` ("data for depth 15"): by that README the paper's depth labels are
bracket nesting, reference depth minus one.

Sampling is *exactly* that distribution conditioned on the depth (what rejection sampling gives), but
constructive, so no tree is thrown away: with ``F[h]`` the probability that a non-root subtree has depth
<= h, a node that must have depth exactly h draws its arity k with weight ``P(k) (F[h-1]^k - F[h-2]^k)``
and then its children left to right, each one "exactly h-1" or "<= h-2" with the conditional
probability that at least one of the remaining children reaches h-1; a node that must have depth <= h
is a leaf with probability ``0.75 / F[h]``. :func:`_rejection_tree` is the plain rejection sampler, kept
to test that the two agree in distribution.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

ALL_OPS = ("MIN", "MAX", "FIRST", "MED", "SM")
DEFAULT_OPS = ("MIN", "MAX", "FIRST")
LEAF_P = 0.75
ARITIES = (2, 3, 4, 5)
MAX_DEPTH = 200
CLOSE = "]"

Example = tuple[list[str], int]
DEPTH_CONVENTIONS = ("nesting", "reference")


def apply_op(op: str, args: Sequence[int]) -> int:
    """The value of operator ``op`` on argument values ``args``."""
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "FIRST":
        return args[0]
    if op == "MED":
        return sorted(args)[(len(args) - 1) // 2]
    if op == "SM":
        return sum(args) % 10
    raise ValueError(f"unknown operator {op!r}")


def check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    bad = [op for op in ops if op not in ALL_OPS]
    if not ops or bad or len(set(ops)) != len(ops):
        raise ValueError(f"ops must be distinct names from {', '.join(ALL_OPS)}, got {', '.join(ops) or 'none'}")
    return ops


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an integer in 1..{MAX_DEPTH}, got {depth!r}")


def nesting_depth(depth: int, convention: str = "nesting") -> int:
    """The maximum bracket nesting that ``depth`` means in ``convention`` (:data:`DEPTH_CONVENTIONS`):
    ``"nesting"`` is the nesting itself; ``"reference"`` counts the leaves as a level, as the generators of
    Nangia & Bowman and of Irie et al. do (see the module doc), so reference depth D is nesting D - 1.
    ``ValueError`` (one line, naming the convention or the depth) otherwise."""
    if convention not in DEPTH_CONVENTIONS:
        raise ValueError(f"depth_convention must be one of {', '.join(DEPTH_CONVENTIONS)}, got {convention!r}")
    low = 2 if convention == "reference" else 1
    if isinstance(depth, bool) or not isinstance(depth, int) or not low <= depth <= MAX_DEPTH + low - 1:
        what = " (a reference depth counts the leaves: 2 is one bracket)" if convention == "reference" else ""
        raise ValueError(f"depth must be an integer in {low}..{MAX_DEPTH + low - 1} in the {convention} "
                         f"convention{what}, got {depth!r}")
    return depth - 1 if convention == "reference" else depth


class _Sampler:
    """Constructive sampler of trees of an exact depth, emitting tokens and computing the value."""

    def __init__(self, rng: random.Random, depth: int, ops: Sequence[str]):
        self.rng, self.ops = rng, tuple(ops)
        # F[h] = P(non-root subtree depth <= h), h = 0..depth; F[-1] (stored at index depth+1) = 0.
        f = [LEAF_P]
        for _ in range(depth):
            f.append(LEAF_P + (1 - LEAF_P) * sum(f[-1] ** k for k in ARITIES) / len(ARITIES))
        f.append(0.0)
        self.f = f
        # arity weights for "exactly h" and "<= h" operator nodes
        self.exact_w = [[f[h - 1] ** k - f[h - 2] ** k for k in ARITIES] for h in range(1, depth + 1)]
        self.le_w = [[f[h - 1] ** k for k in ARITIES] for h in range(1, depth + 1)]

    def _op(self, k: int, child_fn, out: list[str]) -> int:
        op = self.rng.choice(self.ops)
        out.append("[" + op)
        values = child_fn(k, out)
        out.append(CLOSE)
        return apply_op(op, values)

    def leaf(self, out: list[str]) -> int:
        v = self.rng.randrange(10)
        out.append(str(v))
        return v

    def at_most(self, h: int, out: list[str]) -> int:
        """A non-root subtree of depth <= h."""
        rng = self.rng
        if h == 0 or rng.random() * self.f[h] < LEAF_P:
            return self.leaf(out)
        k = rng.choices(ARITIES, weights=self.le_w[h - 1])[0]
        return self._op(k, lambda k, out: [self.at_most(h - 1, out) for _ in range(k)], out)

    def exactly(self, h: int, out: list[str]) -> int:
        """A subtree of depth exactly h (an operator when h >= 1, root or not)."""
        if h == 0:
            return self.leaf(out)
        k = self.rng.choices(ARITIES, weights=self.exact_w[h - 1])[0]
        return self._op(k, lambda k, out: self._children(h, k, out), out)

    def _children(self, h: int, k: int, out: list[str]) -> list[int]:
        hi, lo = self.f[h - 1], self.f[h - 2]   # P(child depth <= h-1), P(child depth <= h-2)
        values, need = [], True
        for i in range(k):
            if not need:
                values.append(self.at_most(h - 1, out))
                continue
            r = k - i
            p_exact = (hi - lo) * hi ** (r - 1) / (hi ** r - lo ** r)
            if r == 1 or self.rng.random() < p_exact:
                values.append(self.exactly(h - 1, out))
                need = False
            else:
                values.append(self.at_most(h - 2, out))
        return values


def iter_examples(rng: random.Random, depth: int, ops: Sequence[str] = DEFAULT_OPS,
                  depth_convention: str = "nesting") -> Iterator[Example]:
    """An endless stream of ``(tokens, label)`` of exactly ``depth`` (in ``depth_convention``, see
    :func:`nesting_depth`) drawn from ``rng``."""
    depth = nesting_depth(depth, depth_convention)
    _check_depth(depth)
    sampler = _Sampler(rng, depth, check_ops(ops))
    while True:
        tokens: list[str] = []
        label = sampler.exactly(depth, tokens)
        yield tokens, label


def generate(n: int, depth: int, seed: int, ops: Sequence[str] = DEFAULT_OPS,
             depth_convention: str = "nesting") -> list[Example]:
    """``n`` examples of depth exactly ``depth``, deterministic for ``seed``: the maximum bracket nesting
    with ``depth_convention="nesting"`` (the default), the leaves counted as a level with ``"reference"``
    (so ``generate(n, 15, s, depth_convention="reference") == generate(n, 14, s)``).

    Returns a list of ``(tokens, label)`` with tokens like ``"[MAX"``, ``"4"``, ``"]"`` and label an int
    0..9. Examples may repeat (use :func:`fastweights.tasks.make_splits` for de-duplicated splits).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_examples(random.Random(seed), depth, ops, depth_convention)
    return [next(stream) for _ in range(n)]


def evaluate(tokens: Sequence[str]) -> int:
    """The value of a token sequence (stack machine); ``ValueError`` if it is not one expression."""
    stack: list[tuple[str, list[int]]] = []
    result = None
    for i, tok in enumerate(tokens):
        if result is not None:
            raise ValueError(f"token {i}: {tok!r} after the end of the expression")
        if tok.startswith("[") and tok[1:] in ALL_OPS:
            stack.append((tok[1:], []))
        elif tok == CLOSE:
            if not stack or len(stack[-1][1]) < 2:
                raise ValueError(f"token {i}: ']' without an operator of >= 2 arguments")
            op, args = stack.pop()
            value = apply_op(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif len(tok) == 1 and tok.isdigit() and stack:
            stack[-1][1].append(int(tok))
        else:
            raise ValueError(f"token {i}: unexpected {tok!r}")
    if result is None:
        raise ValueError("incomplete expression")
    return result


def depth_of(tokens: Sequence[str]) -> int:
    """Maximum bracket nesting of a token sequence."""
    level = deepest = 0
    for tok in tokens:
        if tok.startswith("["):
            level += 1
            deepest = max(deepest, level)
        elif tok == CLOSE:
            level -= 1
    return deepest


def reference_depth_of(tokens: Sequence[str]) -> int:
    """The depth of a token sequence as the reference generators count it: the root at level 1 and each
    leaf at one level below its operator; the deepest leaf's level (counted from the leaves, not from
    :func:`depth_of`)."""
    level = deepest = 0
    for tok in tokens:
        if tok.startswith("["):
            level += 1
        elif tok == CLOSE:
            level -= 1
        else:
            deepest = max(deepest, level + 1)
    return deepest


def _rejection_tree(rng: random.Random, depth: int, ops: Sequence[str] = DEFAULT_OPS) -> Example:
    """Reference sampler: draw whole trees top-down, abandon one as soon as it is deeper than ``depth``,
    retry until the depth is exact. Same distribution as :func:`iter_examples`, far slower."""

    class TooDeep(Exception):
        pass

    def node(level: int, root: bool, out: list[str]) -> tuple[int, int]:   # (value, depth)
        if not root and rng.random() < LEAF_P:
            v = rng.randrange(10)
            out.append(str(v))
            return v, 0
        if level > depth:
            raise TooDeep
        k = rng.choice(ARITIES)
        op = rng.choice(ops)
        out.append("[" + op)
        kids = [node(level + 1, False, out) for _ in range(k)]
        out.append(CLOSE)
        return apply_op(op, [v for v, _ in kids]), 1 + max(d for _, d in kids)

    while True:
        tokens: list[str] = []
        try:
            value, d = node(1, True, tokens)
        except TooDeep:
            continue
        if d == depth:
            return tokens, value
