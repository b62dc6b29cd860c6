"""Data for training: encoded splits, a resumable seeded batch sampler, padding, and the task objectives.

The sampler draws one permutation of the training set per epoch from ``(seed, epoch)`` alone, so the
data order never depends on any other random stream; the position ``(epoch, batch)`` is all a
checkpoint needs to continue exactly where it stopped. Under DDP every process draws the same global
batch and keeps every ``world``-th example of it, so N processes see exactly the examples one process
would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..tasks import CODE_EXEC_TGT_VOCAB, encode

BLANK_ID = CODE_EXEC_TGT_VOCAB.stoi["_"]


class EncodedSplit(torch.utils.data.Dataset):
    """One split as token ids: item ``i`` is ``(ids, target)`` (target ids for code-exec, a label for ListOps)."""

    def __init__(self, task: str, examples):
        self.task = task
        self.ids, self.targets = encode(task, examples)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.targets[i]

    def num_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def collate(task: str, items) -> dict:
    """Right-pads with id 0: ``{"inputs": [B, T], "targets": [B, T] or [B], "lengths": [B]}``."""
    lengths = torch.tensor([len(x) for x, _ in items], dtype=torch.long)
    width = int(lengths.max()) if items else 0
    inputs = torch.zeros(len(items), width, dtype=torch.long)
    for b, (x, _) in enumerate(items):
        inputs[b, :len(x)] = torch.tensor(x, dtype=torch.long)
    if task == "code-exec":
        targets = torch.zeros(len(items), width, dtype=torch.long)
        for b, (_, y) in enumerate(items):
            targets[b, :len(y)] = torch.tensor(y, dtype=torch.long)
    else:
        targets = torch.tensor([y for _, y in items], dtype=torch.long)
    return {"inputs": inputs, "targets": targets, "lengths": lengths}


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Batches of a seeded per-epoch permutation, starting at a settable ``(epoch, batch)`` position.

    ``batch_size`` is the global batch; incomplete last batches are dropped (so every step sees the
    same number of examples), except that a split smaller than one batch gives one batch of everything.
    With ``world > 1`` each process yields its share ``global_batch[rank::world]``.

    Length buckets (``lengths`` given and ``pool`` > 1): the epoch's permutation is cut into pools of ``pool``
    batches; each pool is sorted by length and cut into batches, and the order of all the epoch's batches is
    then shuffled (from ``(seed, epoch)`` again). An epoch holds the same examples as without buckets, every
    batch has examples of similar length (little padding), and the order still depends on ``(seed, epoch)``
    alone, so ``(epoch, batch)`` still resumes exactly.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 lengths=None, pool: int = 0):
        if n < 1:
            raise ValueError("the training split is empty")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths must give one length per example ({n}), got {len(lengths)}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.lengths = None if lengths is None else torch.as_tensor(lengths, dtype=torch.long)
        self.pool = pool
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.n // self.batch_size)

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start = epoch, batch

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """The global batches of ``epoch``, in order."""
        perm = self.permutation(epoch)
        bs = min(self.batch_size, self.n)
        perm = perm[:self.batches_per_epoch * bs]
        if self.lengths is None or self.pool <= 1:
            return list(perm.split(bs))
        batches = []
        for chunk in perm.split(self.pool * bs):
            by_length = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches.extend(by_length.split(bs))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7_919_000_000)
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches(self.epoch)[self.start:]:
            yield batch[self.rank::self.world].tolist()


def make_loader(dataset: EncodedSplit, batch_sampler) -> torch.utils.data.DataLoader:
    """A DataLoader in the main process with its own generator, so it never draws from the global RNG
    (which dropout uses and checkpoints save)."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=0,
                                       collate_fn=lambda items: collate(dataset.task, items),
                                       generator=torch.Generator().manual_seed(0))


def eval_batches(dataset: EncodedSplit, batch_size: int):
    """The whole split in batches of similar length (sorted by length: little padding; every example once)."""
    order = sorted(range(len(dataset)), key=lambda j: len(dataset.ids[j]))
    for i in range(0, len(order), batch_size):
        yield collate(dataset.task, [dataset[j] for j in order[i:i + batch_size]])


# --------------------------------------------------------------------------------------- objectives

def loss_mask(batch: dict, loss_positions: str = "prints") -> torch.Tensor:
    """code-exec: ``[B, T]`` bool, the positions the loss reads: the executed prints (``"prints"``) or every real
    token (``"all"``). The prints, where accuracy is measured, are always among them."""
    targets = batch["targets"]
    if loss_positions == "prints":
        return (targets != 0) & (targets != BLANK_ID)
    return targets != 0


def objective(task: str, logits: torch.Tensor, batch: dict, loss_positions: str = "prints") -> dict:
    """Summed loss and metric counts of one batch (sums, so that batches and processes add up).

    code-exec: ``logits`` [B, T, C], or [N, C] at the positions of :func:`loss_mask` only (in row-major
    order, what ``logits[mask]`` gives: from a model that computes only those). The loss is summed over the
    executed-print positions (targets that are values, not ``_`` or pad) with ``loss_positions="prints"``, or
    over every real token with ``"all"``. Counts: ``prints`` (executed prints), ``print_correct``, ``seqs``,
    ``seq_correct`` (programs whose every print is right; a program without executed prints counts as right).
    ListOps: ``logits`` [B, C]; counts ``examples``, ``correct``.
    Returns ``{"loss_sum": tensor, "loss_count": int, counts...}``.
    """
    targets = batch["targets"]
    if task == "code-exec":
        prints = (targets != 0) & (targets != BLANK_ID)
        lmask = loss_mask(batch, loss_positions)
        kept = logits if logits.dim() == 2 else logits[lmask]  # [N, C] at the loss positions
        loss_sum = F.cross_entropy(kept.float(), targets[lmask], reduction="sum")
        with torch.no_grad():
            right = torch.zeros_like(prints)
            right[lmask] = kept.argmax(-1) == targets[lmask]
            right &= prints
            seq_ok = (right | ~prints).all(dim=1)
        return {"loss_sum": loss_sum, "loss_count": int(lmask.sum()), "prints": int(prints.sum()),
                "print_correct": int(right.sum()), "seqs": int(targets.shape[0]), "seq_correct": int(seq_ok.sum())}
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    with torch.no_grad():
        correct = int((logits.argmax(-1) == targets).sum())
    return {"loss_sum": loss_sum, "loss_count": int(targets.shape[0]), "examples": int(targets.shape[0]),
            "correct": correct}


COUNT_KEYS = {"code-exec": ("loss_count", "prints", "print_correct", "seqs", "seq_correct"),
              "listops": ("loss_count", "examples", "correct")}
MAIN_METRIC = {"code-exec": "print_acc", "listops": "acc", "formal": "long_acc"}


def summarize(task: str, totals: dict) -> dict:
    """Loss per counted position and accuracies from summed counts."""
    out = {"loss": totals["loss_sum"] / max(totals["loss_count"], 1)}
    if task == "code-exec":
        out["print_acc"] = totals["print_correct"] / max(totals["prints"], 1)
        out["seq_acc"] = totals["seq_correct"] / max(totals["seqs"], 1)
    else:
        out["acc"] = totals["correct"] / max(totals["examples"], 1)
    return out
