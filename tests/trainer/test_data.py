import json

import numpy as np
import pytest

from gptzoo.trainer.data import prepare
from gptzoo.zoo.datasets import DataError, load
from gptzoo.zoo.sources import SourceError
from gptzoo.zoo.tokenizers import from_spec


def test_shakespeare_char_split_and_round_trip(data_dir):
    ds = load("shakespeare_char", data_dir)
    assert ds.meta["vocab_size"] == 65
    assert ds.meta["n_train"] == 1003854 and ds.meta["n_val"] == 111540  # 90/10 of 1,115,394 chars
    tok = from_spec(ds.meta["tokenizer"])
    assert tok.decode(ds.train[:14].tolist()) == "First Citizen:"


def test_shakespeare_gpt2(tmp_path):
    folder = prepare("shakespeare", tmp_path)
    ds = load("shakespeare", tmp_path)
    assert folder.name == "shakespeare" and ds.meta["tokenizer"]["kind"] == "gpt2"
    assert 300_000 < ds.meta["n_train"] < 310_000  # nanoGPT's prepare.py reports 301,966
    assert ds.train.dtype == np.uint16


def test_text_dataset_from_user_file(tmp_path):
    src = tmp_path / "poem.txt"
    src.write_text("the quick brown fox jumps over the lazy dog\n" * 10)
    prepare("text", tmp_path / "d", source=str(src))
    ds = load("poem", tmp_path / "d")
    assert ds.meta["kind"] == "text" and ds.meta["vocab_size"] == len(set(src.read_text()))


def test_wrong_sha256_is_refused_and_nothing_written(tmp_path):
    src = tmp_path / "fake.txt"
    src.write_text("not shakespeare " * 20)
    with pytest.raises(SourceError, match="sha256 mismatch"):
        prepare("shakespeare_char", tmp_path / "d", source=str(src))
    assert not (tmp_path / "d").exists()


def test_unknown_dataset_and_missing_source(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'wikitext'"):
        prepare("wikitext", tmp_path)
    with pytest.raises(SourceError, match="not found"):
        prepare("text", tmp_path, source=str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="not prepared"):
        load("shakespeare_char", tmp_path)


def test_corrupt_or_truncated_token_file_is_detected(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abcdefghij" * 50)
    folder = prepare("text", tmp_path / "d", source=str(src), name="t")
    raw = bytearray((folder / "val.bin").read_bytes())
    raw[0] ^= 1
    (folder / "val.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt"):
        load("t", tmp_path / "d")
    (folder / "val.bin").write_bytes(bytes(raw[:-2]))
    with pytest.raises(DataError, match="missing or truncated"):
        load("t", tmp_path / "d")
    (folder / "meta.json").write_text("{")
    with pytest.raises(DataError, match="corrupt"):
        load("t", tmp_path / "d")


def test_meta_records_source_sha(data_dir):
    meta = json.loads((data_dir / "shakespeare_char" / "meta.json").read_text())
    assert meta["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_prepare_from_url_checks_sha(tmp_path):
    """The download path, against a loopback HTTP server holding the local copy (and a wrong file)."""
    import functools
    import http.server
    import os
    import shutil
    import threading

    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(os.path.join(os.environ["GPTZOO_DATA_SOURCE"], "tinyshakespeare.txt"), served / "input.txt")
    (served / "other.txt").write_text("not it " * 100)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        prepare("shakespeare_char", tmp_path / "d", source=f"{base}/input.txt")
        assert load("shakespeare_char", tmp_path / "d").meta["n_val"] == 111540
        with pytest.raises(SourceError, match="sha256 mismatch"):
            prepare("shakespeare", tmp_path / "e", source=f"{base}/other.txt")
        with pytest.raises(SourceError, match="cannot download"):
            prepare("shakespeare_char", tmp_path / "f", source=f"{base}/missing.txt")
    finally:
        server.shutdown()
