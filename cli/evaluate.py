"""`gptzoo eval`: recompute a variant's losses from its checkpoint and compare them with its card."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gptzoo.cli.common import DataDirOpt, LayersOpt, ModelOpt, StoreOpt, fail, handle_errors, open_store, out

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
    """Recompute train/val loss of a variant's best checkpoint and check it against card.json."""
    from gptzoo.trainer.evaluation import evaluate_variant

    variant = open_store(store).resolve(model=model, layers=layers)
    losses = evaluate_variant(variant, data_dir, full=full)
    card_val = variant.card.val_loss
    agrees = None if full or card_val is None else abs(losses["val"] - card_val) <= TOLERANCE
    if as_json:
        print(json.dumps({"id": variant.id, **losses, "card_val_loss": card_val, "agrees": agrees}))
    else:
        scope = "every window" if full else "the card's windows"
        out.print(f"{variant.id}: val {losses['val']:.4f}, train {losses['train']:.4f} on {scope}"
                  + (f"; card says val {card_val:.4f}" if card_val is not None else ""), highlight=False)
    if agrees is False:
        fail(f"recomputed val loss {losses['val']:.6f} differs from the card's {card_val:.6f}")
