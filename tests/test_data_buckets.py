"""Length buckets of the training sampler: the same examples per epoch, less padding, exact resume, DDP shares."""

import torch

from fastweights.train.data import ResumableBatchSampler

N, BS = 1000, 32
LENGTHS = torch.randint(5, 300, (N,), generator=torch.Generator().manual_seed(0)).tolist()


def _epoch(sampler, epoch=0, start=0):
    sampler.set_position(epoch, start)
    return list(sampler)


def test_buckets_keep_the_epochs_examples_and_cut_padding():
    plain = ResumableBatchSampler(N, BS, seed=3)
    bucketed = ResumableBatchSampler(N, BS, seed=3, lengths=LENGTHS, pool=10)
    for epoch in (0, 1):
        a, b = _epoch(plain, epoch), _epoch(bucketed, epoch)
        assert len(a) == len(b) == N // BS
        assert sorted(i for batch in a for i in batch) == sorted(i for batch in b for i in batch)

    def padded(batches):
        return sum(max(LENGTHS[i] for i in batch) * len(batch) for batch in batches)

    real = sum(LENGTHS[i] for batch in _epoch(plain) for i in batch)
    assert real / padded(_epoch(bucketed)) > 0.85 > 0.7 > real / padded(_epoch(plain))
    # the batch order is still random: lengths do not rise along the epoch
    maxima = [max(LENGTHS[i] for i in batch) for batch in _epoch(bucketed)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_buckets_depend_on_seed_and_epoch_only_and_resume_exactly():
    s = ResumableBatchSampler(N, BS, seed=3, lengths=LENGTHS, pool=10)
    full = _epoch(s, 2)
    assert _epoch(ResumableBatchSampler(N, BS, seed=3, lengths=LENGTHS, pool=10), 2) == full
    assert _epoch(s, 2, start=7) == full[7:]
    assert _epoch(s, 3) != full and _epoch(ResumableBatchSampler(N, BS, seed=4, lengths=LENGTHS, pool=10), 2) != full


def test_buckets_split_each_global_batch_across_processes():
    one = _epoch(ResumableBatchSampler(N, BS, seed=1, lengths=LENGTHS, pool=5))
    shares = [_epoch(ResumableBatchSampler(N, BS, seed=1, rank=r, world=2, lengths=LENGTHS, pool=5)) for r in (0, 1)]
    for batch, a, b in zip(one, *shares):
        assert sorted(a + b) == sorted(batch) and a == batch[0::2]


def test_pool_of_one_is_the_plain_sampler():
    assert _epoch(ResumableBatchSampler(N, BS, seed=5, lengths=LENGTHS, pool=1)) == \
        _epoch(ResumableBatchSampler(N, BS, seed=5))
