"""The algorithmic-task data tier: code execution, sequential ListOps, splits, files, the ``data`` CLI."""

import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from fastweights.tasks import (CODE_EXEC_SRC_VOCAB, CODE_EXEC_TGT_VOCAB, LISTOPS_VOCAB, code_execution, listops,
                               load_splits, make_splits, read_split, to_tensors, write_splits)

CLI = [sys.executable, "-m", "fastweights.cli"]
VARS = ("x", "y", "z", "a", "b")


# ------------------------------------------------------------------------------------ code execution

def statements(src):
    """Split source tokens into statements (an if with its body is one statement)."""
    out, cur = [], []
    for tok in src:
        cur.append(tok)
        if tok == ";":
            out.append(cur)
            cur = []
    assert not cur, "trailing tokens after the last ';'"
    return out


@pytest.mark.parametrize("num_vars", [3, 5])
def test_code_exec_targets_match_the_interpreter(num_vars):
    programs = code_execution.generate(300, num_vars, seed=11)
    applied_in_true_if = 0
    for src, tgt in programs:
        assert len(src) == len(tgt)
        assert code_execution.execute(src) == tgt             # raises if a value leaves [-8, 16]
        stmts = statements(src)
        assert len(stmts) == 100 == code_execution.count_statements(src)
        assert stmts[0][1] == "=" and len(stmts[0]) == 4
        assert stmts[-1][0] == "print" and len(stmts[-1]) == 3
        assert tgt[-1] not in ("_",)                          # the last print always runs
        assert set(src) <= set(CODE_EXEC_SRC_VOCAB.itos)
        assert {t for t in src if t in VARS} <= set(VARS[:num_vars])
        for i, t in enumerate(tgt):
            if t != "_":
                assert src[i] == ";" and -8 <= int(t) <= 16
        # count assignments inside true conditionals to already-defined variables (the reference's quirk)
        env = {}
        for s in stmts:
            if s[0] == "if":
                v, cmp, d, body = s[1], s[2], int(s[3]), s[5:]
                if (env[v] < d if cmp == "<" else env[v] > d) and body[1] == "=" and body[0] in env:
                    applied_in_true_if += 1
                s = body if (env[v] < d if cmp == "<" else env[v] > d) else []
            if len(s) == 4:
                env[s[0]] = int(s[2])
            elif len(s) == 3 and s[1] in ("++", "--"):
                env[s[0]] += 1 if s[1] == "++" else -1
    assert applied_in_true_if > 100


def test_code_exec_values_stay_in_range_even_with_many_increments():
    # a short program space where ++/-- dominate: every value must stay inside [-8, 16]
    for src, tgt in code_execution.generate(200, 3, seed=5, length=300):
        assert code_execution.execute(src) == tgt
        assert all(-8 <= int(t) <= 16 for t in tgt if t != "_")


def test_code_exec_assignment_in_true_conditional_is_applied():
    src = "x = 1 ; if x < 5 : x = 7 ; print x ; if x > 8 : x = 2 ; print x ; if x > 3 : print x ;".split()
    tgt = code_execution.execute(src)
    printed = [t for t in tgt if t != "_"]
    assert printed == ["7", "7", "7"]
    assert tgt[-1] == "7" and len(tgt) == len(src)
    assert code_execution.execute("y = 3 ; if y > 4 : print y ; y -- ; print y ;".split())[-1] == "2"
    assert "_" == code_execution.execute("y = 3 ; if y > 4 : print y ;".split())[-1]
    # an assignment in a true conditional defines a new variable
    assert code_execution.execute("x = 0 ; if x < 1 : z = 4 ; print z ;".split())[-1] == "4"


def test_code_exec_interpreter_rejects_bad_programs():
    for bad in ["print x ;", "x = 1 ; y ++ ;", "x = 1 ; if x < 3 print x ;", "x = 12 ;", "x = 1 ; x + ;"]:
        with pytest.raises(ValueError):
            code_execution.execute(bad.split())
    prog = "x = 8 ; " + "x ++ ; " * 9
    with pytest.raises(ValueError, match="left"):
        code_execution.execute(prog.split())


def test_code_exec_deterministic_and_seed_dependent():
    a = code_execution.generate(20, 5, seed=3)
    assert a == code_execution.generate(20, 5, seed=3)
    assert a != code_execution.generate(20, 5, seed=4)
    random.seed(0)
    x = code_execution.generate(5, 3, seed=1)
    random.seed(99)                                           # global state plays no part
    assert x == code_execution.generate(5, 3, seed=1)
    assert code_execution.generate(3, 3, seed=1, length=7)[0][0].count(";") == 7


def test_code_exec_bad_arguments():
    with pytest.raises(ValueError, match="num_vars"):
        code_execution.generate(1, 6, seed=0)
    with pytest.raises(ValueError, match="length"):
        code_execution.generate(1, 3, seed=0, length=1)


# ------------------------------------------------------------------------------------------- ListOps

def parse(tokens):
    """Independent recursive-descent parser: returns (op, children) / int trees."""
    pos = 0

    def node():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok)
        assert tok[0] == "[", tok
        kids = []
        while tokens[pos] != "]":
            kids.append(node())
        pos += 1
        return tok[1:], kids

    tree = node()
    assert pos == len(tokens)
    return tree


def tree_depth(t):
    return 0 if isinstance(t, int) else 1 + max(tree_depth(c) for c in t[1])


def tree_value(t):
    if isinstance(t, int):
        return t
    op, kids = t
    vals = [tree_value(c) for c in kids]
    s = sorted(vals)
    return {"MIN": min(vals), "MAX": max(vals), "FIRST": vals[0], "SM": sum(vals) % 10,
            "MED": s[(len(s) - 1) // 2]}[op]


def arities(t, out):
    if not isinstance(t, int):
        out.append(len(t[1]))
        for c in t[1]:
            arities(c, out)
    return out


@pytest.mark.parametrize("depth,n", [(1, 100), (2, 300), (10, 300), (15, 200)])
def test_listops_exact_depth_arity_and_labels(depth, n):
    examples = listops.generate(n, depth, seed=depth)
    ops_seen = Counter()
    for tokens, label in examples:
        tree = parse(tokens)
        assert not isinstance(tree, int)                      # the root is an operator
        assert tree_depth(tree) == depth == listops.depth_of(tokens)
        assert all(2 <= k <= 5 for k in arities(tree, []))
        assert tree_value(tree) == label == listops.evaluate(tokens)
        assert isinstance(label, int) and 0 <= label <= 9
        assert set(tokens) <= set(LISTOPS_VOCAB.itos)
        ops_seen.update(t for t in tokens if t.startswith("["))
    assert set(ops_seen) == {"[MIN", "[MAX", "[FIRST"}


def test_listops_med_and_sm():
    assert listops.apply_op("MED", [3, 6]) == 3               # lower median for even counts
    assert listops.apply_op("MED", [9, 1, 5]) == 5
    assert listops.apply_op("MED", [4, 4, 1, 7]) == 4
    assert listops.apply_op("SM", [9, 8, 7]) == 4
    assert listops.evaluate("[SM 9 [MED 3 6 ] 1 ]".split()) == 3
    examples = listops.generate(200, 6, seed=1, ops=("MED", "SM"))
    seen = set()
    for tokens, label in examples:
        seen.update(t for t in tokens if t.startswith("["))
        assert tree_value(parse(tokens)) == label
        assert listops.depth_of(tokens) == 6
    assert seen == {"[MED", "[SM"}
    with pytest.raises(ValueError, match="ops"):
        listops.generate(1, 3, seed=0, ops=("MIN", "AVG"))
    with pytest.raises(ValueError, match="depth"):
        listops.generate(1, 0, seed=0)


def test_listops_deterministic_and_seed_dependent():
    a = listops.generate(50, 10, seed=7)
    assert a == listops.generate(50, 10, seed=7)
    assert a != listops.generate(50, 10, seed=8)


@pytest.mark.parametrize("depth", [3, 6])
def test_listops_constructive_sampler_matches_rejection_sampling(depth):
    """The constructive sampler draws from the rejection-sampling distribution (checked on statistics)."""
    n = 3000
    fast = listops.generate(n, depth, seed=0)
    rng = random.Random(1)
    slow = [listops._rejection_tree(rng, depth) for _ in range(n)]
    for ex in slow[:50]:
        assert listops.depth_of(ex[0]) == depth
    mean_len = lambda exs: sum(len(t) for t, _ in exs) / len(exs)  # noqa: E731
    assert abs(mean_len(fast) - mean_len(slow)) < 0.05 * mean_len(slow), (mean_len(fast), mean_len(slow))
    root_k = lambda exs: Counter(len(parse(t)[1]) for t, _ in exs)  # noqa: E731
    f, s = root_k(fast), root_k(slow)
    for k in (2, 3, 4, 5):
        assert abs(f[k] - s[k]) / n < 0.045, (f, s)
    labels_f, labels_s = Counter(y for _, y in fast), Counter(y for _, y in slow)
    for y in range(10):
        assert abs(labels_f[y] - labels_s[y]) / n < 0.045, (labels_f, labels_s)


# -------------------------------------------------------------------------------------------- splits

def keys(examples):
    return {tuple(ex[0]) for ex in examples}


@pytest.mark.parametrize("task,opts", [("code-exec", {"num_vars": 3, "length": 20}),
                                       ("listops", {"depth": 2})])
def test_splits_are_disjoint_and_deterministic(task, opts):
    sp = make_splits(task, sizes=(600, 100, 100), seed=2, **opts)
    assert [len(sp.train), len(sp.valid), len(sp.test)] == [600, 100, 100]
    tr, va, te = keys(sp.train), keys(sp.valid), keys(sp.test)
    assert len(tr) == 600 and len(va) == 100 and len(te) == 100
    assert not (tr & va) and not (tr & te) and not (va & te)
    again = make_splits(task, sizes=(600, 100, 100), seed=2, **opts)
    assert again.train == sp.train and again.test == sp.test and again.meta == sp.meta
    assert make_splits(task, sizes=(600, 100, 100), seed=3, **opts).test != sp.test
    # test and valid do not depend on the size of the training set
    smaller = make_splits(task, sizes=(10, 100, 100), seed=2, **opts)
    assert smaller.test == sp.test and smaller.valid == sp.valid


def test_splits_dedupe_a_small_space_and_fail_cleanly_when_too_small():
    # depth 1 with one operator has few short examples: duplicates are common, all must be dropped
    sp = make_splits("listops", sizes=(2000, 200, 200), seed=0, depth=1, ops=["FIRST"])
    everything = sp.train + sp.valid + sp.test
    assert len(keys(everything)) == len(everything) == 2400
    with pytest.raises(ValueError, match="distinct"):
        make_splits("listops", sizes=(3000, 0, 0), seed=0, depth=1, ops=["FIRST"], max_duplicate_run=3)
    with pytest.raises(ValueError, match="unknown option"):
        make_splits("listops", sizes=(1, 1, 1), seed=0, num_vars=3)
    with pytest.raises(ValueError, match="unknown task"):
        make_splits("sorting", sizes=(1, 1, 1))


def test_write_read_round_trip_and_tensors(tmp_path):
    for task, opts in (("code-exec", {"num_vars": 5, "length": 10}), ("listops", {"depth": 4, "ops": ["MED", "SM"]})):
        sp = make_splits(task, sizes=(30, 5, 5), seed=1, progress=False, **opts)
        write_splits(tmp_path / task, sp)
        back = load_splits(tmp_path / task)
        assert back.train == sp.train and back.valid == sp.valid and back.test == sp.test
        assert back.meta == json.loads(json.dumps(sp.meta))
        batch = to_tensors(task, back.train[:4])
        lengths = [len(ex[0]) for ex in back.train[:4]]
        assert batch["inputs"].shape == (4, max(lengths)) and batch["lengths"].tolist() == lengths
        assert int(batch["inputs"][0, lengths[0]:].abs().sum()) == 0        # right padding with id 0
        if task == "code-exec":
            assert batch["targets"].shape == batch["inputs"].shape
            assert CODE_EXEC_TGT_VOCAB.decode(batch["targets"][0].tolist()) == back.train[0][1]
            assert CODE_EXEC_SRC_VOCAB.decode(batch["inputs"][0].tolist()) == back.train[0][0]
        else:
            assert batch["targets"].tolist() == [y for _, y in back.train[:4]]
            assert LISTOPS_VOCAB.decode(batch["inputs"][1].tolist()) == back.train[1][0]
    (tmp_path / "bad.txt").write_text("[MAX 1 2 ]\t3\n[MIN 1\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        read_split(tmp_path / "bad.txt", "listops")
    assert CODE_EXEC_SRC_VOCAB.pad_id == CODE_EXEC_TGT_VOCAB.pad_id == LISTOPS_VOCAB.pad_id == 0
    assert len(CODE_EXEC_TGT_VOCAB) == 27 and len(LISTOPS_VOCAB) == 17


def test_progress_bar_forced_on_does_not_break_generation():
    sp = make_splits("listops", sizes=(20, 5, 5), seed=0, progress=True, depth=3)
    assert len(sp.train) == 20


# ------------------------------------------------------------------------------------------------ CLI

def run(*args, timeout=120):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def test_cli_data_end_to_end(tmp_path):
    r = run("data", "code-exec", "--vars", "3", "--length", "30", "--sizes", "50,10,10", "--seed", "4",
            "--out", str(tmp_path / "ce"))
    assert r.returncode == 0, r.stderr
    r = run("data", "listops", "--depth", "15", "--ops", "MIN,MAX,SM", "--sizes", "40,10,10",
            "--out", str(tmp_path / "lo"))
    assert r.returncode == 0, r.stderr

    ce = load_splits(tmp_path / "ce")
    assert ce.meta["task"] == "code-exec" and ce.meta["options"] == {"num_vars": 3, "length": 30}
    assert ce.meta["seed"] == 4 and ce.meta["sizes"] == {"train": 50, "valid": 10, "test": 10}
    assert ce.train == make_splits("code-exec", sizes=(50, 10, 10), seed=4, num_vars=3, length=30).train
    for src, tgt in ce.train + ce.valid + ce.test:
        assert code_execution.execute(src) == tgt and src.count(";") == 30
    lines = (tmp_path / "ce" / "train.txt").read_text().splitlines()
    assert len(lines) == 50 and all(line.count("\t") == 1 for line in lines)

    lo = load_splits(tmp_path / "lo")
    assert lo.meta["options"] == {"depth": 15, "ops": ["MIN", "MAX", "SM"]}
    assert [len(lo.train), len(lo.valid), len(lo.test)] == [40, 10, 10]
    for tokens, label in lo.train + lo.valid + lo.test:
        assert tree_depth(parse(tokens)) == 15 and tree_value(parse(tokens)) == label
    assert not keys(lo.train) & keys(lo.test)


@pytest.mark.parametrize("args,needle", [
    (["data", "code-exec", "--vars", "4", "--out", "x"], "--vars"),
    (["data", "code-exec", "--length", "1", "--out", "x"], "--length"),
    (["data", "listops", "--depth", "0", "--out", "x"], "--depth"),
    (["data", "listops", "--depth", "ten", "--out", "x"], "--depth"),
    (["data", "listops", "--ops", "MIN,AVG", "--out", "x"], "--ops"),
    (["data", "listops", "--sizes", "10,10", "--out", "x"], "--sizes"),
    (["data", "listops", "--seed", "-1", "--out", "x"], "--seed"),
])
def test_cli_data_bad_flags_give_one_line_errors(args, needle):
    r = run(*args)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in r.stderr


def test_cli_data_unwritable_out_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    r = run("data", "listops", "--depth", "2", "--sizes", "5,1,1", "--out", str(tmp_path / "file" / "sub"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("fastweights: error: --out")
