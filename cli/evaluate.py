"""`gptzoo eval`: recompute a variant's losses from its checkpoint and compare them with its card."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gptzoo.cli.common import (
    DataDirOpt,
    LayersOpt,
    ModelOpt,
    StoreOpt,
    err,
    fail,
    handle_errors,
    open_store,
    out,
    resolve,
)

TOLERANCE = 1e-4  # the same windows in the same order: only float summation order may differ


@handle_errors
def eval_cmd(
    layers: LayersOpt = None,
    model: ModelOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Score every window of both splits, not the card's.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Recompute train/val loss of a variant's best checkpoint and check it against card.json.

    Scores the windows the card was scored on: the whole validation split for variants trained or imported by this
    gptzoo (older cards: the fixed windows they name) and the training split's fixed windows. Prepares the dataset
    first when it is a built-in one that is not prepared yet, like `train`.
    """
    from gptzoo.trainer.evaluation import evaluate_variant, windows
    from gptzoo.zoo.card import EvalFacts

    variant = resolve(open_store(store), model=model, layers=layers)

    def say(message: str) -> None:
        err.print(message, highlight=False)

    losses = evaluate_variant(variant, data_dir, full=full, say=say)
    card_val = variant.card.val_loss
    agrees = None if full or card_val is None else abs(losses["val"] - card_val) <= TOLERANCE
    if as_json:
        print(json.dumps({"id": variant.id, **losses, "card_val_loss": card_val, "agrees": agrees}))
    else:
        used = windows(variant.card.eval or EvalFacts(), full)
        scope = ", ".join(f"{k} on {'every window' if w is None else f'{w} fixed windows'}" for k, w in used.items())
        out.print(f"{variant.id}: val {losses['val']:.4f}, train {losses['train']:.4f} ({scope})"
                  + (f"; card says val {card_val:.4f}" if card_val is not None else ""), highlight=False)
    if agrees is False:
        fail(f"recomputed val loss {losses['val']:.6f} differs from the card's {card_val:.6f}")
