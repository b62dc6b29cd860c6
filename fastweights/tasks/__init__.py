"""Data for the algorithmic tasks: generators, disjoint splits, plain-text files, vocabularies.

- :mod:`fastweights.tasks.code_execution`: ``generate(n, num_vars, seed, length=100)`` and
  ``execute(src_tokens)`` (an independent interpreter);
- :mod:`fastweights.tasks.listops`: ``generate(n, depth, seed, ops=("MIN", "MAX", "FIRST"))``,
  ``evaluate(tokens)``, ``depth_of(tokens)``;
- :mod:`fastweights.tasks.splits`: ``make_splits``, ``write_splits``, ``load_splits``, ``read_split``,
  the fixed vocabularies and ``to_tensors``;
- :mod:`fastweights.tasks.formal`: the eight formal languages of Bhattamishra et al. (2020) with next-symbol-set
  targets (``make_formal_splits``, ``write_formal_splits``, ``load_formal_splits``, ``language``);
- :mod:`fastweights.tasks.wikitext`: WikiText-103 word-level corpus (``load_corpus`` with its tokenised
  cache, ``download``).

No model code here, and no torch import at module load (only :func:`to_tensors` needs it).
"""

from . import code_execution, formal, listops, wikitext
from .formal import load_formal_splits, make_formal_splits, write_formal_splits
from .splits import (CODE_EXEC_SRC_VOCAB, CODE_EXEC_TGT_VOCAB, LISTOPS_NUM_CLASSES, LISTOPS_VOCAB, SPLITS, TASKS,
                     Splits, Vocab, encode, load_splits, make_splits, read_split, to_tensors, write_splits)

__all__ = ["code_execution", "formal", "listops", "wikitext", "make_formal_splits", "write_formal_splits",
           "load_formal_splits", "make_splits", "write_splits", "load_splits", "read_split",
           "Splits", "Vocab", "encode", "to_tensors", "CODE_EXEC_SRC_VOCAB", "CODE_EXEC_TGT_VOCAB", "LISTOPS_VOCAB",
           "LISTOPS_NUM_CLASSES", "SPLITS", "TASKS"]
