import json
import os

import pytest

from gptzoo.zoo import atomic
from gptzoo.zoo.names import InvalidName, check_name, to_name
from gptzoo.zoo.store import Store, StoreError, default_store

SHAPE = dict(n_head=2, n_embd=8, block_size=8, vocab_size=3, tokenizer={"kind": "char", "chars": "abc"})


def _card(root, vid, n_layer, **extra):
    d = root / vid
    d.mkdir(parents=True)
    (d / "card.json").write_text(json.dumps({"id": vid, "n_layer": n_layer, **SHAPE, **extra}))


def test_default_store_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTZOO_HOME", str(tmp_path / "h"))
    assert default_store() == tmp_path / "h" / "store"
    monkeypatch.setenv("GPTZOO_STORE", str(tmp_path / "s"))
    assert default_store() == tmp_path / "s"


def test_resolve_by_depth_id_and_ambiguity(tmp_path):
    _card(tmp_path, "shakespeare-char-4l", 4, dataset={"name": "shakespeare_char"})
    _card(tmp_path, "shakespeare-char-1l", 1, dataset={"name": "shakespeare_char"})
    _card(tmp_path, "mytext-4l", 4, dataset={"name": "mytext"})
    store = Store(tmp_path)
    assert store.resolve(layers=1).id == "shakespeare-char-1l"
    assert store.resolve(model="mytext-4l").id == "mytext-4l"
    assert store.resolve(layers=4, dataset="shakespeare_char").id == "shakespeare-char-4l"
    with pytest.raises(StoreError, match="several 4-layer variants"):
        store.resolve(layers=4)
    with pytest.raises(StoreError, match="no 6-layer variant.*available: "):
        store.resolve(layers=6)


def test_broken_card_does_not_hide_the_rest(tmp_path):
    _card(tmp_path, "good-1l", 1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "card.json").write_text("{not json")
    assert [v.id for v in Store(tmp_path).variants()] == ["good-1l"]
    with pytest.raises(StoreError, match="card.json is not readable JSON"):
        Store(tmp_path).load("bad")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda c: c.pop("n_layer"), "missing required field `n_layer`"),
        (lambda c: c.update(n_layer="four"), "Expected `int`, got `str` - at `$.n_layer`"),
        (lambda c: c.update(n_layer=0), "Expected `int` >= 1 - at `$.n_layer`"),
        (lambda c: c.update(dataset=7), "at `$.dataset`"),
        (lambda c: c.update(id="other-1l"), "describes 'other-1l'"),
        (lambda c: c.update(tokenizer={"kind": "char", "chars": "abc"}), "tokenizer has 3 characters but the model's "
                                                                          "vocabulary is 5"),
        (lambda c: c.update(tokenizer={"kind": "char", "chars": "abcaa"}), "distinct characters"),
        (lambda c: c.update(tokenizer={"kind": "gpt2"}), "GPT-2 BPE needs a vocabulary of at least 50257"),
    ],
)
def test_a_broken_card_is_listed_with_its_reason(tmp_path, edit, reason):
    _card(tmp_path, "good-1l", 1)
    card = {"id": "bad-2l", "n_layer": 2, **SHAPE, "vocab_size": 5, "tokenizer": {"kind": "char", "chars": "abcde"}}
    edit(card)
    (tmp_path / "bad-2l").mkdir()
    (tmp_path / "bad-2l" / "card.json").write_text(json.dumps(card))
    good, broken = Store(tmp_path).scan()
    assert [v.id for v in good] == ["good-1l"]
    [b] = broken
    assert b.id == "bad-2l" and reason in b.reason
    with pytest.raises(StoreError, match="variant bad-2l: "):
        Store(tmp_path).load("bad-2l")


def test_null_dataset_is_a_usable_card(tmp_path):
    _card(tmp_path, "x-1l", 1, dataset=None)
    [v] = Store(tmp_path).variants()
    assert v.dataset_name is None and Store(tmp_path).resolve(layers=1, dataset="shakespeare_char").id == "x-1l"


@pytest.mark.parametrize("name", ["../x", "/abs/folder", "a/b", "..", ".hidden", "UPPER", "sp ace", "", "x" * 65,
                                  "-lead"])
def test_names_that_could_escape_the_store_are_refused(tmp_path, name):
    store = Store(tmp_path / "store")
    for call in (store.variant_dir, store.load):
        with pytest.raises(InvalidName, match="invalid variant id"):
            call(name)
    assert not (tmp_path / "store").exists()  # refused before anything was touched


def test_a_folder_with_an_invalid_name_is_listed_as_broken(tmp_path):
    _card(tmp_path, "Not Valid", 1)
    _, [b] = Store(tmp_path).scan()
    assert b.id == "Not Valid" and "invalid variant id" in b.reason


def test_to_name_folds_free_text_into_a_valid_name():
    assert to_name("My Play (draft 2)", "text") == "my-play-draft-2"
    assert to_name("../../etc", "text") == "etc"
    assert to_name("???", "text") == "text"
    assert check_name(to_name("A" * 200, "t")) == "a" * 64


def test_lock_admits_one_holder_and_names_it(tmp_path):
    store = Store(tmp_path)
    with store.lock("x-1l", "training"):
        busy = rf"variant x-1l is busy: pid {os.getpid()} on .* is training it"
        with pytest.raises(StoreError, match=busy), store.lock("x-1l", "importing"):
            pass
        with store.lock("y-1l"):  # another variant is free
            pass
    with store.lock("x-1l"):  # released with its holder
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_store(tmp_path):
    tmp_path.chmod(0o500)
    with pytest.raises(StoreError, match="not writable"):
        Store(tmp_path / "store").ensure_writable()


def test_unwritable_store_as_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        Store(tmp_path / "afile" / "store").ensure_writable()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_a_card_round_trips_and_old_cards_still_load(tmp_path):
    """Unknown keys (older or hand-added) are ignored, a bare NaN (older writers) reads as NaN, and the store's
    writer keeps what it was given."""
    d = tmp_path / "x-1l"
    d.mkdir()
    (d / "card.json").write_text('{"id": "x-1l", "n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 8, '
                                 '"vocab_size": 3, "tokenizer": {"kind": "char", "chars": "abc"}, "val_loss": NaN, '
                                 '"dataset": {"name": "d", "sha256": null}, "a_note": "mine"}')
    store = Store(tmp_path)
    v = store.load("x-1l")
    assert v.card.val_loss != v.card.val_loss and v.dataset_name == "d"
    v.card.val_loss, v.card.params = 1.5, 123
    store.save_card(v.card)
    again = store.load("x-1l").card
    assert again == v.card and json.loads((d / "card.json").read_text())["val_loss"] == 1.5
