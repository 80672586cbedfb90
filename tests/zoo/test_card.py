"""card.json's quality and stopping facts: optional, so cards written before them still load."""

import json

from gptzoo.zoo import card as cardmod
from gptzoo.zoo.card import Card, EvalFacts
from gptzoo.zoo.store import Store

OLD = {"id": "x-1l", "n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 8, "vocab_size": 3,
       "tokenizer": {"kind": "char", "chars": "abc"}, "val_loss": 1.9, "train_loss": 1.8,
       "eval": {"windows_per_split": 240, "batch_size": 12}, "best_iter": 2000, "iterations": 2000}


def test_a_card_from_before_the_new_fields_loads_with_them_unset():
    c = cardmod.from_dict(OLD)
    assert c.val_loss == 1.9 and c.eval == EvalFacts(windows_per_split=240, batch_size=12)
    assert c.eval.train_windows is None  # train scored on windows_per_split, as it was
    assert (c.stop_reason, c.stopped_at_iter, c.reported_val_loss, c.val_loss_windows) == (None, None, None, None)
    assert cardmod.from_dict(json.loads(cardmod.encode(c))) == c
    assert "stop_reason" not in json.loads(cardmod.encode(c))  # unset fields are not written


def test_new_fields_round_trip_through_the_store(tmp_path):
    c = Card(**(OLD | {"eval": EvalFacts(windows_per_split=None, train_windows=240, batch_size=8)}),
             stop_reason="patience", stopped_at_iter=2750, val_loss_windows=1.91, reported_val_loss=1.8857)
    store = Store(tmp_path)
    store.save_card(c)
    raw = json.loads((tmp_path / "x-1l" / "card.json").read_text())
    assert raw["stop_reason"] == "patience" and raw["stopped_at_iter"] == 2750
    assert raw["eval"] == {"train_windows": 240, "batch_size": 8}  # windows_per_split None: the whole split
    assert store.load("x-1l").card == c


def test_arch_summary_names_the_block_family_and_its_settings_in_short():
    from gptzoo.zoo.card import arch_summary

    dense = dict(kv_heads=2, window=64, rope_theta=10000.0, experts=0, experts_per_token=2, balance_coef=0.01)
    assert arch_summary("gpt2", None) == "gpt2"
    assert arch_summary("oss", dense) == "oss kv2 w64"  # θ at its default and a dense MLP are not spelled out
    assert arch_summary("oss", dense | dict(experts=4, experts_per_token=1)) == "oss kv2 w64 moe4 k1"
    assert arch_summary("oss", dense | dict(rope_theta=150000.0)) == "oss kv2 w64 rope150000"
