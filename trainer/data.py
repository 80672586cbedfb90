"""Dataset preparation lives in gptzoo.zoo.prepare (the nanoGPT import prepares datasets too, and zoo/ imports
nothing above it); its names stay importable from here."""

from gptzoo.zoo.prepare import BUILTIN, DEFAULT_DATASET, KINDS, TRAIN_FRACTION, ensure, make_tokenizer, prepare

__all__ = ["BUILTIN", "DEFAULT_DATASET", "KINDS", "TRAIN_FRACTION", "ensure", "make_tokenizer", "prepare"]
