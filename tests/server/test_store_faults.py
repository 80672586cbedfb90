"""The store goes wrong under a live server: an unmount leaves an empty folder, a folder becomes unreadable, a card
points outside its folder, a folder is a link to elsewhere, a card names a huge file. The server keeps serving what
it loaded, keeps the operators' unload states, serves nothing from outside the store, and says why without naming a
path. Real servers on the tiny exported variant; every wait polls for a condition."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import MODEL, add_variant, free_port, gptzoo
from tests.server.test_live_zoo import COPY, complete, listed, wait_until


@pytest.fixture
def store(exported_store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(exported_store, dst)
    return dst


def unmount(store: Path, away: Path) -> None:
    """What an unmount leaves: the mount point, an empty folder."""
    away.mkdir()
    for d in store.iterdir():
        d.rename(away / d.name)


def mount(store: Path, away: Path) -> None:
    for d in away.iterdir():
        d.rename(store / d.name)


def test_an_emptied_store_keeps_serving_and_keeps_the_unload_states(make_client, store, tmp_path, caplog):
    add_variant(store, COPY, 2)
    client = make_client(store, threads=1, reload_interval=0.05)
    zoo = client.app.state.zoo
    assert client.post(f"/admin/models/{COPY}/unload").status_code == 200
    caplog.set_level(logging.INFO, "gptzoo.server")
    unmount(store, tmp_path / "away")
    scans = zoo.scans
    wait_until(lambda: zoo.scans >= scans + 3, "three rescans of the empty store")
    r = complete(client, MODEL)
    assert r.status_code == 200, r.text
    assert client.get("/readyz").status_code == 200
    assert listed(client) == {MODEL: "ready", COPY: "unloaded"}
    r = client.post("/admin/reload")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert "no variant" in r.json()["error"]["message"] and "serving" in r.json()["error"]["message"]
    warnings = [rec.getMessage() for rec in caplog.records if "rescan of the store" in rec.getMessage()]
    assert len(warnings) == 1 and "no variant" in warnings[0], warnings  # said once, not every second
    assert not [rec for rec in caplog.records if "removed from the store" in rec.getMessage()]

    mount(store, tmp_path / "away")
    wait_until(lambda: client.post("/admin/reload").status_code == 200, "the store back")
    assert listed(client) == {MODEL: "ready", COPY: "unloaded"}  # the operator's unload holds
    assert complete(client, MODEL).status_code == 200
    assert any("can be read again" in rec.getMessage() for rec in caplog.records)


def test_an_operators_load_while_the_store_is_empty_does_not_remove_the_variant(make_client, store, tmp_path):
    client = make_client(store, threads=1, reload_interval=0)
    unmount(store, tmp_path / "away")
    r = client.post(f"/admin/models/{MODEL}/load")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert listed(client) == {MODEL: "ready"} and complete(client, MODEL).status_code == 200


def test_an_unload_state_survives_the_variant_leaving_and_coming_back(make_client, store, tmp_path):
    add_variant(store, COPY, 2)
    client = make_client(store, threads=1, reload_interval=0)
    assert client.post(f"/admin/models/{COPY}/unload").status_code == 200
    (tmp_path / "away").mkdir()
    (store / COPY).rename(tmp_path / "away" / COPY)
    assert client.post("/admin/reload").json()["removed"] == [COPY]
    (tmp_path / "away" / COPY).rename(store / COPY)
    assert client.post("/admin/reload").json()["added"] == [COPY]
    assert listed(client) == {MODEL: "ready", COPY: "unloaded"}
    assert client.post(f"/admin/models/{COPY}/load").status_code in (200, 202)
    wait_until(lambda: listed(client)[COPY] == "ready", "the variant loaded again")


def _without_dac_override() -> None:
    """In the server's process, before exec: root reads anything, whatever the modes say; without these two
    capabilities it meets the file modes like any user (CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop a capability")


@pytest.mark.slow
def test_an_unreadable_store_keeps_serving(tmp_path, store):
    """`gptzoo serve --reload-interval 0.1` while the store folder, then one variant's folder, cannot be read."""
    add_variant(store, COPY, 2)
    port, log = free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        try:
            proc = subprocess.Popen(gptzoo("serve", "--store", store, "--port", port, "--threads", 1,
                                           "--reload-interval", 0.1), stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
        except subprocess.SubprocessError as e:
            pytest.skip(f"cannot run the server without root's file access: {e}")
    try:
        wait_until(lambda: proc.poll() is not None or _status(f"{base}/readyz") == 200, "the server ready")
        assert proc.poll() is None, log.read_text()
        assert httpx.post(f"{base}/admin/models/{COPY}/unload").status_code == 200
        states = {MODEL: "ready", COPY: "unloaded"}
        try:
            store.chmod(0)
            wait_until(lambda: "the store cannot be read" in log.read_text(), "the rescan to notice")
            assert listed(httpx.Client(base_url=base)) == states
            assert complete(httpx, MODEL, base=base).status_code == 200
            assert _status(f"{base}/readyz") == 200
        finally:
            store.chmod(0o755)
        wait_until(lambda: "can be read again" in log.read_text(), "the rescan to read it again")
        try:
            (store / MODEL).chmod(0)  # one folder: its card cannot be read, which is not "removed"
            r = httpx.post(f"{base}/admin/reload")
            assert r.status_code == 200 and r.json()["removed"] == [], r.text
            assert listed(httpx.Client(base_url=base)) == states
            assert complete(httpx, MODEL, base=base).status_code == 200
        finally:
            (store / MODEL).chmod(0o755)
        assert listed(httpx.Client(base_url=base)) == states
    finally:
        proc.terminate()
        proc.wait(30)
    assert "Traceback" not in log.read_text() and f"{MODEL}: removed" not in log.read_text(), log.read_text()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


# -- confinement ------------------------------------------------------------------------------------------------
def _thief(store: Path, vid: str, file: str) -> None:
    """A copy of MODEL without its own file, whose card names `file` instead."""
    def edit(card):
        card["onnx"]["file"] = file
    d = add_variant(store, vid, 2, edit=edit)
    (d / "model.onnx").unlink()


def test_nothing_outside_a_variants_folder_is_served(make_client, store, tmp_path):
    _thief(store, "abs-2l", str(store / MODEL / "model.onnx"))
    _thief(store, "up-2l", f"../{MODEL}/model.onnx")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(store / MODEL, outside / "ext-2l")
    card = json.loads((outside / "ext-2l" / "card.json").read_text())
    (outside / "ext-2l" / "card.json").write_text(json.dumps({**card, "id": "ext-2l"}))
    (store / "ext-2l").symlink_to(outside / "ext-2l", target_is_directory=True)
    client = make_client(store, threads=1)
    for vid in ("abs-2l", "up-2l", "ext-2l"):
        r = complete(client, vid)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready", (vid, r.text)
    models = {m["id"]: m for m in client.get("/readyz").json()["models"]}
    assert {i: m["state"] for i, m in models.items()} == {MODEL: "ready", "abs-2l": "failed", "up-2l": "failed",
                                                           "ext-2l": "failed"}
    assert "onnx.file" in models["abs-2l"]["reason"] and "onnx.file" in models["up-2l"]["reason"]
    assert "outside the store" in models["ext-2l"]["reason"]
    text = client.get("/readyz").text + client.get("/v1/models").text
    assert str(tmp_path) not in text and "/etc" not in text, text


def test_a_file_larger_than_its_card_says_is_refused_without_reading_it(make_client, store):
    """A card naming a huge file (a 6 GB sparse one here) fails at once on its size instead of being hashed."""
    d = add_variant(store, "huge-2l", 2)
    with open(d / "model.onnx", "wb") as f:
        f.truncate(6 * 1024**3)
    client = make_client(store, threads=1)
    [m] = [m for m in client.get("/readyz").json()["models"] if m["id"] == "huge-2l"]
    assert m["state"] == "failed" and "size" in m["reason"] and "card" in m["reason"], m
    assert complete(client, MODEL).status_code == 200


# -- shutdown ---------------------------------------------------------------------------------------------------
def test_a_normal_stop_logs_no_failed_rescan(make_client, store, caplog):
    client = make_client(store, threads=1, reload_interval=1)
    zoo = client.app.state.zoo
    caplog.set_level(logging.INFO, "gptzoo.server")
    scans = zoo.scans
    # a rescan done and none under way: the follower sleeps until its next one, which meets the drain
    wait_until(lambda: zoo.scans > scans and zoo._running is None and zoo._queued is None, "a rescan done")
    client.app.state.registry.drain()  # what SIGTERM and Ctrl-C do first
    wait_until(lambda: zoo._follower.done(), "the rescans to stop")
    assert not [r.getMessage() for r in caplog.records if "rescan" in r.getMessage()]
