import json
import os

import pytest

from gptzoo.zoo import atomic
from gptzoo.zoo.store import Store, StoreError, default_store


def _card(root, vid, n_layer, **extra):
    d = root / vid
    d.mkdir(parents=True)
    (d / "card.json").write_text(json.dumps({"id": vid, "n_layer": n_layer, **extra}))


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
    with pytest.raises(StoreError, match="not a readable card"):
        Store(tmp_path).load("bad")


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
