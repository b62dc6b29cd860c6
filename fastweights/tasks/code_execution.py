"""Code execution (Fan et al. 2020; the variant of Irie et al. 2021): programs of straight-line statements.

A program is ``length`` statements (default 100) over ``num_vars`` variables, the first ``num_vars`` of
``x y z a b``. Every token is a whitespace-separated word::

    x = 5 ;            assignment, a digit 0..9, to any variable (defined or not)
    x ++ ;  x -- ;     increment / decrement of a defined variable
    print x ;          print a defined variable
    if x < 3 : S       conditional on a defined variable and a digit 0..9 (``<`` or ``>``), where S is
    if x > 3 : S       one of the three statements above (never another ``if``)

``if x < 3 : print x ;`` is 7 tokens and one statement. The target is aligned token by token with the
source: ``_`` everywhere except on the ``;`` of a print that is executed, which carries the printed value
as a decimal string (``"-3"``, ``"12"``). A print inside a false conditional gets ``_``.

Sampling (one ``random.Random(seed)`` stream, no global state):

- statement 0 is an assignment, statement ``length - 1`` is a plain (unconditional) print;
- every other statement is one of assignment / ++-- / print / conditional, uniformly (all four apply
  from the second statement on, since the first assignment defines a variable);
- the body S of a conditional is one of assignment / ++-- / print, uniformly;
- an assignment picks its variable uniformly among all ``num_vars`` names and its value in 0..9; the
  other statements pick uniformly among the *defined* variables (listed in ``x y z a b`` order), where
  "defined" means assigned by a statement that was executed;
- ++ or -- is drawn with probability 1/2 and flipped when applying it would leave [-8, 16]. The flip is
  decided from the variable's current value whether or not an enclosing condition holds, so the program
  text never depends on whether a body runs, and every executed ++/-- keeps values inside [-8, 16]
  (values start in 0..9 and only ++/-- change them by one).

Semantics are the ordinary ones: the body of a true conditional is executed, including an assignment,
which sets (and, for a new name, defines) its variable; a false conditional does nothing. **Difference
from the reference generator** of Irie et al. (``algorithmic/utils/data_generator.py`` in
IDSIA/recurrent-fwp): there an assignment inside a true conditional to an *already defined* variable is
not applied (the program text says ``x = 7`` ran, but the targets keep the old value of x). We apply it.

:func:`execute` is a separate, small interpreter over source tokens (it does not share code with the
generator); the tests use it to re-derive every target.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

VARIABLES = ("x", "y", "z", "a", "b")
MIN_VALUE, MAX_VALUE = -8, 16
BLANK = "_"

Example = tuple[list[str], list[str]]


def _check(num_vars: int, length: int) -> None:
    if isinstance(num_vars, bool) or not isinstance(num_vars, int) or not 1 <= num_vars <= len(VARIABLES):
        raise ValueError(f"num_vars must be an integer in 1..{len(VARIABLES)}, got {num_vars!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an integer >= 2 (an assignment first, a print last), got {length!r}")


def _simple(rng: random.Random, kind: int, names: Sequence[str], state: dict[str, int], run: bool,
            src: list[str], tgt: list[str]) -> None:
    """Append one non-conditional statement (0 assign, 1 ++/--, 2 print); apply it when ``run``."""
    if kind == 0:
        var, value = rng.choice(names), rng.randrange(10)
        src += [var, "=", str(value), ";"]
        tgt += [BLANK] * 4
        if run:
            state[var] = value
        return
    defined = [v for v in names if v in state]
    var = rng.choice(defined)
    if kind == 1:
        step = 1 if rng.randrange(2) else -1
        if not MIN_VALUE <= state[var] + step <= MAX_VALUE:
            step = -step
        src += [var, "++" if step > 0 else "--", ";"]
        tgt += [BLANK] * 3
        if run:
            state[var] += step
    else:
        src += ["print", var, ";"]
        tgt += [BLANK, BLANK, str(state[var]) if run else BLANK]


def _program(rng: random.Random, num_vars: int, length: int) -> Example:
    names = VARIABLES[:num_vars]
    state: dict[str, int] = {}
    src: list[str] = []
    tgt: list[str] = []
    for i in range(length):
        kind = 0 if i == 0 else 2 if i == length - 1 else rng.randrange(4)
        if kind < 3:
            _simple(rng, kind, names, state, True, src, tgt)
            continue
        less = rng.randrange(2) == 0
        var = rng.choice([v for v in names if v in state])
        bound = rng.randrange(10)
        src += ["if", var, "<" if less else ">", str(bound), ":"]
        tgt += [BLANK] * 5
        holds = state[var] < bound if less else state[var] > bound
        _simple(rng, rng.randrange(3), names, state, holds, src, tgt)
    return src, tgt


def iter_programs(rng: random.Random, num_vars: int, length: int = 100) -> Iterator[Example]:
    """An endless stream of ``(src_tokens, tgt_tokens)`` drawn from ``rng``."""
    _check(num_vars, length)
    while True:
        yield _program(rng, num_vars, length)


def generate(n: int, num_vars: int, seed: int, length: int = 100) -> list[Example]:
    """``n`` programs of ``length`` statements over ``num_vars`` variables, deterministic for ``seed``.

    Returns a list of ``(src_tokens, tgt_tokens)``, two lists of strings of equal length. Programs may
    repeat (use :func:`fastweights.tasks.make_splits` for de-duplicated splits).
    """
    _check(num_vars, length)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [_program(rng, num_vars, length) for _ in range(n)]


# ----------------------------------------------------------------------------------------------------
# An independent interpreter: parses the source tokens, runs them, returns the target tokens.

def _take_var(tokens: Sequence[str], i: int) -> str:
    if i >= len(tokens) or tokens[i] not in VARIABLES:
        raise ValueError(f"token {i}: expected a variable, got {tokens[i] if i < len(tokens) else 'end'!r}")
    return tokens[i]


def _take(tokens: Sequence[str], i: int, want: str) -> None:
    if i >= len(tokens) or tokens[i] != want:
        raise ValueError(f"token {i}: expected {want!r}, got {tokens[i] if i < len(tokens) else 'end'!r}")


def _take_digit(tokens: Sequence[str], i: int) -> int:
    if i >= len(tokens) or len(tokens[i]) != 1 or not tokens[i].isdigit():
        raise ValueError(f"token {i}: expected a digit, got {tokens[i] if i < len(tokens) else 'end'!r}")
    return int(tokens[i])


def _exec_simple(tokens: Sequence[str], i: int, env: dict[str, int], live: bool, out: list[str]) -> int:
    """Execute the simple statement starting at token i (only if ``live``); return the next index."""
    if i < len(tokens) and tokens[i] == "print":
        var = _take_var(tokens, i + 1)
        _take(tokens, i + 2, ";")
        if var not in env and live:
            raise ValueError(f"token {i + 1}: print of undefined variable {var!r}")
        out += ["_", "_", str(env[var]) if live else "_"]
        return i + 3
    var = _take_var(tokens, i)
    op = tokens[i + 1] if i + 1 < len(tokens) else None
    if op == "=":
        value = _take_digit(tokens, i + 2)
        _take(tokens, i + 3, ";")
        if live:
            env[var] = value
        out += ["_"] * 4
        return i + 4
    if op in ("++", "--"):
        _take(tokens, i + 2, ";")
        if live:
            if var not in env:
                raise ValueError(f"token {i}: {op} on undefined variable {var!r}")
            env[var] += 1 if op == "++" else -1
            if not MIN_VALUE <= env[var] <= MAX_VALUE:
                raise ValueError(f"token {i}: {var} left [{MIN_VALUE}, {MAX_VALUE}]: {env[var]}")
        out += ["_"] * 3
        return i + 3
    raise ValueError(f"token {i + 1}: expected '=', '++' or '--', got {op!r}")


def execute(src_tokens: Sequence[str]) -> list[str]:
    """Run a program given as source tokens and return its aligned target tokens.

    Raises ``ValueError`` on a malformed program, a use of an undefined variable in code that runs, or
    a value leaving [-8, 16].
    """
    env: dict[str, int] = {}
    out: list[str] = []
    i = 0
    while i < len(src_tokens):
        if src_tokens[i] == "if":
            var = _take_var(src_tokens, i + 1)
            cmp = src_tokens[i + 2] if i + 2 < len(src_tokens) else None
            if cmp not in ("<", ">"):
                raise ValueError(f"token {i + 2}: expected '<' or '>', got {cmp!r}")
            bound = _take_digit(src_tokens, i + 3)
            _take(src_tokens, i + 4, ":")
            if var not in env:
                raise ValueError(f"token {i + 1}: condition on undefined variable {var!r}")
            out += ["_"] * 5
            holds = env[var] < bound if cmp == "<" else env[var] > bound
            i = _exec_simple(src_tokens, i + 5, env, holds, out)
        else:
            i = _exec_simple(src_tokens, i, env, True, out)
    return out


def count_statements(src_tokens: Sequence[str]) -> int:
    """Number of statements (an ``if`` with its body counts once): the number of ``;`` tokens."""
    return sum(1 for t in src_tokens if t == ";")
