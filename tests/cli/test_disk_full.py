"""A full disk, for real: each case runs in its own mount namespace (`unshare`) on a tmpfs of a chosen size, so the
kernel itself answers ENOSPC, nothing is mounted outside the test, and the mount vanishes with the process. A
training run, an export and each atomic write must end with one line naming the file and "no space left on device",
keep the previous files whole, leave no temporary file behind, and leave a store that still loads and resumes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gptzoo.zoo import checkpoint
from gptzoo.zoo.store import CARD, CKPT_BEST, CKPT_LAST, ONNX, TRAIN_LOG, Store
from tests.cli.test_cli import TINY_FLAGS
from tests.conftest import TINY

PAGE = 4096
BALLAST = 1024  # pages (4 MiB): enough for the whole tiny run once it is removed
MODEL = "shakespeare-char-2l"
GPTZOO = f"{shlex.quote(sys.executable)} -m gptzoo.cli.main"


def _unshare_works() -> bool:
    probe = Path(f"/tmp/gptzoo-unshare-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        r = subprocess.run(["unshare", "--mount", "--map-root-user", "mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs",
                            str(probe)], capture_output=True, timeout=60)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        probe.rmdir()


pytestmark = pytest.mark.skipif(shutil.which("unshare") is None or not _unshare_works(),
                                reason="needs `unshare --mount --map-root-user` (user and mount namespaces) to mount a "
                                       "small tmpfs")


def pages(n_bytes: int) -> int:
    return -(-n_bytes // PAGE)


def on_small_disk(tmp_path: Path, size_pages: int, script: str) -> subprocess.CompletedProcess:
    """Run the shell `script` where $FULL is a fresh tmpfs of `size_pages` pages (files in it are gone afterwards:
    copy what the test checks to $OUT)."""
    full, out = tmp_path / "full", tmp_path / "out"
    full.mkdir()
    out.mkdir()
    body = f'mount -t tmpfs -o size={size_pages * PAGE} tmpfs "$FULL" || exit 99\n' + textwrap.dedent(script)
    r = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", body], capture_output=True, text=True,
                       timeout=900, env=os.environ | {"FULL": str(full), "OUT": str(out)})
    assert r.returncode != 99, r.stderr
    return r


def assert_disk_full_line(stderr: str, file: str):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: no space left on device") and file in lines[0], lines[0]


def no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*.tmp")]


def assert_consistent(store_root: Path) -> None:
    """The card loads, names the checkpoint beside it (sha256) and the log is whole JSON lines."""
    v = Store(store_root).load(MODEL)
    checkpoint.load_variant(v)  # raises on a card that does not match its checkpoint
    for line in (v.dir / TRAIN_LOG).read_text().splitlines():
        json.loads(line)


def _sizes(trained_store: Path) -> tuple[int, int]:
    """Pages of the tiny variant's best checkpoint and of its resumable one after a few steps (which holds AdamW's
    moments, twice the weights: at iteration 0 it is about as big as the best one)."""
    return tuple(pages((trained_store / MODEL / f).stat().st_size) for f in (CKPT_BEST, CKPT_LAST))


def _train_on_small_disk(tmp_path, data_dir, room_pages):
    """Train on a disk with `room_pages` free (a ballast file stands for the rest of it); then free the
    ballast and rerun the same command (`--resume` when there is something to resume)."""
    train = f'{GPTZOO} train --layers 2 --preset cpu {" ".join(TINY_FLAGS)} --store "$FULL/store" --data-dir {data_dir}'
    r = on_small_disk(tmp_path, room_pages + BALLAST, f"""
        head -c {BALLAST * PAGE} /dev/zero >"$FULL/ballast"
        {train} --quiet 2>"$OUT/stderr"
        echo $? >"$OUT/rc"
        cp -a "$FULL/store" "$OUT/store"
        rm "$FULL/ballast"
        resume=$(test -f "$FULL/store/{MODEL}/{CKPT_LAST}" && echo --resume)
        {train} --quiet $resume >"$OUT/again" 2>&1
        echo $? >"$OUT/rc_again"
        cp -a "$FULL/store" "$OUT/store_again"
    """)
    out = tmp_path / "out"
    assert (out / "rc").read_text().strip() == "1", r.stderr
    assert (out / "rc_again").read_text().strip() == "0", (out / "again").read_text()
    assert no_temp_files(out / "store") == []
    assert_consistent(out / "store_again")
    assert Store(out / "store_again").load(MODEL).card.iterations == TINY["max_iters"]
    return out


def test_a_full_disk_at_the_first_checkpoint_leaves_no_variant_and_the_same_command_runs_again(tmp_path, data_dir,
                                                                                                trained_store):
    best, _ = _sizes(trained_store)
    out = _train_on_small_disk(tmp_path, data_dir, best // 2)
    assert_disk_full_line((out / "stderr").read_text(), str(tmp_path / "full" / "store" / MODEL / CKPT_BEST))
    assert [p.name for p in (out / "store" / MODEL).iterdir()] == [TRAIN_LOG]  # no card: no half-made variant
    assert Store(out / "store").variants() == []


@pytest.mark.parametrize("failing", [CKPT_BEST, CKPT_LAST])
def test_a_full_disk_mid_run_keeps_a_consistent_variant_that_resumes_once_space_is_freed(tmp_path, data_dir,
                                                                                        trained_store, failing):
    """Iteration 0's files fit (best, resumable, card, log, lock: 2 x best + 5 pages); at iteration 10 either the new
    best checkpoint (written beside the old one) or the larger resumable one does not."""
    best, last = _sizes(trained_store)
    after_first = 2 * best + 5
    room = after_first + (best // 2 if failing == CKPT_BEST else (best + last) // 2)
    out = _train_on_small_disk(tmp_path, data_dir, room)
    assert_disk_full_line((out / "stderr").read_text(), str(tmp_path / "full" / "store" / MODEL / failing))
    assert_consistent(out / "store")
    assert Store(out / "store").load(MODEL).card.best_iter == (0 if failing == CKPT_BEST else 10)
    assert checkpoint.load(out / "store" / MODEL / CKPT_LAST)["iter_num"] == 0


def test_export_onto_a_full_disk_keeps_the_card_and_writes_no_model(tmp_path, exported_store):
    size = (exported_store / MODEL / ONNX).stat().st_size
    src = tmp_path / "src"
    shutil.copytree(exported_store, src)
    (src / MODEL / ONNX).unlink()
    store_pages = sum(pages(p.stat().st_size) for p in src.rglob("*") if p.is_file())
    card_before = (src / MODEL / CARD).read_bytes()
    r = on_small_disk(tmp_path, store_pages + pages(size) // 2, f"""
        cp -a {src} "$FULL/store"
        {GPTZOO} export --model {MODEL} --store "$FULL/store" 2>"$OUT/stderr"
        echo $? >"$OUT/rc"
        cp -a "$FULL/store" "$OUT/store"
    """)
    out = tmp_path / "out"
    assert (out / "rc").read_text().strip() == "1", r.stderr
    stderr = (out / "stderr").read_text()
    progress = [line for line in stderr.splitlines() if not line.startswith("error:")]
    assert all(line.startswith(("exporting", "checking parity")) for line in progress), stderr
    assert_disk_full_line("\n".join(line for line in stderr.splitlines() if line not in progress),
                          str(tmp_path / "full" / "store" / MODEL / ONNX))
    assert not (out / "store" / MODEL / ONNX).exists() and no_temp_files(out / "store") == []
    assert (out / "store" / MODEL / CARD).read_bytes() == card_before


ATOMIC_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from gptzoo.zoo import atomic

full = Path(os.environ["FULL"])
report = {}
for name in ("old.bin", "old.pt", "log.jsonl"):
    (full / name).write_bytes(b"old contents\\n")
with open(full / "ballast", "wb", buffering=0) as f:  # fill the disk to its last page (unbuffered: nothing left)
    try:
        while f.write(b"x" * 4096):
            pass
    except OSError:
        pass
cases = {
    "write_bytes": lambda: atomic.write_bytes(full / "old.bin", b"y" * 100_000),
    "torch_save": lambda: atomic.torch_save({"w": torch.zeros(100_000)}, full / "old.pt"),
    "append_text": lambda: atomic.append_text(full / "log.jsonl", json.dumps({"x": "z" * 100_000}) + "\\n"),
    "atomic_path": lambda: _np_save(full / "new.npy"),
}

def _np_save(target):
    import numpy as np
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as f:  # a library writing to a file object
        np.save(f, np.zeros(100_000))

for name, write in cases.items():
    try:
        write()
        report[name] = "written"
    except atomic.DiskFull as e:
        report[name] = {"message": str(e), "path": str(e.path)}
    except BaseException as e:
        report[name] = {"other": f"{type(e).__name__}: {e}"}
report["files"] = sorted(p.name for p in full.iterdir())
report["contents"] = {n: (full / n).read_bytes().decode() for n in ("old.bin", "old.pt", "log.jsonl")}
print(json.dumps(report))
"""


def test_every_atomic_write_on_a_full_disk_raises_disk_full_and_keeps_the_old_file(tmp_path):
    r = on_small_disk(tmp_path, 64, f'{shlex.quote(sys.executable)} -c {shlex.quote(ATOMIC_SCRIPT)}')
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    full = tmp_path / "full"
    for name, target in [("write_bytes", "old.bin"), ("torch_save", "old.pt"), ("append_text", "log.jsonl"),
                         ("atomic_path", "new.npy")]:
        assert report[name] == {"message": f"no space left on device: cannot write {full / target} (the previous "
                                           "version, if any, is kept)", "path": str(full / target)}, name
    assert report["files"] == ["ballast", "log.jsonl", "old.bin", "old.pt"]  # no temporary file, no new.npy
    assert set(report["contents"].values()) == {"old contents\n"}  # whole, and the log cut back to its old end
