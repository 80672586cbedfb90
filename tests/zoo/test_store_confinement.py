"""The store reads nothing outside itself, and no variant takes a name that routes: a card's `onnx.file` names a
file in the variant's own folder, a variant folder (or its card, or its file) that leads out of the store is a
broken variant whose reason names no path, `auto` and family names are not variant ids, and a card that cannot be
read is a broken variant, not a missing one."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.zoo.card import from_dict
from gptzoo.zoo.names import InvalidName
from gptzoo.zoo.store import Store, StoreError

SHAPE = dict(n_head=2, n_embd=8, block_size=8, vocab_size=3, tokenizer={"kind": "char", "chars": "abc"})


def _card(root, vid, n_layer=1, **extra):
    d = root / vid
    d.mkdir(parents=True)
    (d / "card.json").write_text(json.dumps({"id": vid, "n_layer": n_layer, **SHAPE, **extra}))
    (d / "model.onnx").write_bytes(b"onnx")
    return d


def _broken(root) -> dict[str, str]:
    return {b.id: b.reason for b in Store(root).scan()[1]}


@pytest.mark.parametrize("file", ["/etc/hostname", "../good-1l/model.onnx", "sub/model.onnx", "..", "", "a\\b"])
def test_an_onnx_file_outside_the_variant_folder_is_a_broken_variant(tmp_path, file):
    store = tmp_path / "store"
    _card(store, "good-1l")
    _card(store, "thief-1l", onnx={"file": file})
    good, _ = Store(store).scan()
    assert [v.id for v in good] == ["good-1l"]
    reason = _broken(store)["thief-1l"]
    assert "onnx.file" in reason and "variant's own folder" in reason, reason
    assert str(tmp_path) not in reason and (not file or file not in reason), reason  # names no path
    with pytest.raises(StoreError, match="onnx.file"):
        Store(store).load("thief-1l")


def test_a_plain_onnx_file_name_is_fine():
    card = from_dict({"id": "x-1l", "n_layer": 1, **SHAPE, "onnx": {"file": "model-v2.onnx"}})
    assert card.onnx.file == "model-v2.onnx"


def test_a_variant_folder_linked_from_outside_the_store_is_broken(tmp_path):
    store, outside = tmp_path / "store", tmp_path / "outside"
    _card(store, "good-1l")
    _card(outside, "ext-1l")
    (store / "ext-1l").symlink_to(outside / "ext-1l", target_is_directory=True)
    reason = _broken(store)["ext-1l"]
    assert "outside the store" in reason and str(tmp_path) not in reason, reason
    with pytest.raises(StoreError, match="outside the store"):
        Store(store).load("ext-1l")
    assert Store(store).entry("ext-1l").reason == reason


@pytest.mark.parametrize("name", ["card.json", "model.onnx"])
def test_a_card_or_model_file_linked_from_outside_is_broken(tmp_path, name):
    store, outside = tmp_path / "store", tmp_path / "outside"
    _card(store, "good-1l")
    d = _card(store, "link-1l")
    src = _card(outside, "link-1l") / name
    (d / name).unlink()
    (d / name).symlink_to(src)
    reason = _broken(store)["link-1l"]
    assert name in reason and "outside" in reason and str(tmp_path) not in reason, reason


def test_links_inside_the_store_and_a_linked_store_root_are_followed(tmp_path):
    """Confinement is about where files really are: a store reached through a link, and a model file linked to
    another file of the same folder, serve as usual."""
    real = tmp_path / "real"
    d = _card(real, "good-1l")
    os.replace(d / "model.onnx", d / "weights.onnx")
    (d / "model.onnx").symlink_to("weights.onnx")
    (tmp_path / "store").symlink_to(real, target_is_directory=True)
    assert [v.id for v in Store(tmp_path / "store").variants()] == ["good-1l"]
    assert not _broken(tmp_path / "store")


def test_a_card_that_cannot_be_read_is_broken_not_gone(tmp_path):
    """An I/O error on card.json (here a link loop, which stands for EACCES/EIO even for root) must not read as
    "the variant was removed": the live zoo would unload it."""
    store = tmp_path / "store"
    _card(store, "good-1l")
    d = _card(store, "loop-1l")
    (d / "card.json").unlink()
    (d / "card.json").symlink_to("card.json")
    reason = _broken(store)["loop-1l"]
    assert "card.json cannot be read" in reason and str(tmp_path) not in reason, reason


def test_auto_and_family_names_are_not_variant_ids(tmp_path):
    store = tmp_path / "store"
    _card(store, "shakespeare-char-1l", dataset={"name": "shakespeare_char"})
    _card(store, "auto", dataset={"name": "shakespeare_char"})
    _card(store, "shakespeare-char", dataset={"name": "shakespeare_char"})  # its own family's name
    _card(store, "mytext", dataset={"name": "mytext_src"})  # another dataset ...
    _card(store, "mytext-1l", dataset={"name": "mytext"})  # ... whose family name it takes
    good, _ = Store(store).scan()
    assert [v.id for v in good] == ["mytext-1l", "shakespeare-char-1l"]
    broken = _broken(store)
    assert "reserved" in broken["auto"] and "`auto`" in broken["auto"], broken
    assert "family" in broken["shakespeare-char"] and "family" in broken["mytext"], broken
    with pytest.raises(InvalidName, match="reserved"):
        Store(store).variant_dir("auto")
    with pytest.raises(InvalidName, match="family"):
        Store(store).variant_dir("shakespeare-char", dataset="shakespeare_char")
    assert Store(store).entry("mytext").reason == broken["mytext"]  # what a live load finds too
    card = from_dict({"id": "shakespeare-char", "n_layer": 1, **SHAPE, "dataset": {"name": "shakespeare_char"}})
    with pytest.raises(InvalidName, match="family"):
        Store(tmp_path / "other").save_card(card)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", ["auto", "shakespeare-char"])
def test_train_refuses_a_reserved_variant_id_before_anything(tmp_path, name):
    store = tmp_path / "store"
    r = CliRunner().invoke(app, ["train", "--layers", "1", "--name", name, "--max-iters", "1", "--store", str(store),
                                 "--data-dir", str(tmp_path / "data")])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and ("reserved" in r.stderr or "family" in r.stderr), r.stderr
    assert not store.exists() or not any(store.iterdir())


def test_a_dataset_cannot_be_named_auto(tmp_path):
    text = tmp_path / "play.txt"
    text.write_text("ROMEO: hello\n" * 50)
    r = CliRunner().invoke(app, ["data", "prepare", "text", "--source", str(text), "--name", "auto", "--tokenizer",
                                 "char", "--data-dir", str(tmp_path / "data")])
    assert r.exit_code != 0 and "reserved" in r.stderr and "Traceback" not in r.output, r.output
    assert not (tmp_path / "data" / "auto").exists()
