"""Atomic file writes: write a temporary file beside the target, flush it to disk, then rename over the target.

A crash or Ctrl-C mid-write leaves the old file (or none), never a truncated one. A full disk anywhere in a write
(the data, the flush, a library's own writer) becomes `DiskFull` naming the target, with the temporary file removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gptzoo.zoo.errors import GptzooError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class DiskFull(GptzooError, OSError):
    """No space (or quota) left on the device holding a file being written; the old file, if any, is kept."""

    def __init__(self, path: Path):
        super().__init__(f"no space left on device: cannot write {path} (the previous version, if any, is kept)")
        self.path, self.errno = Path(path), errno.ENOSPC


def no_space(e: BaseException | None) -> OSError | None:
    """The out-of-space OSError behind `e` (itself, or what it was raised from or during), else None: libraries
    often wrap the OSError their writer got."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in target's folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the store is read by other users (e.g. a server)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())  # some filesystems (NFS, delayed allocation) only report a full disk here
        os.replace(tmp_path, target)
    except Exception as e:
        if isinstance(e, DiskFull) and e.path != tmp_path:
            raise  # about another file
        if no_space(e) is not None:  # also a DiskFull about our own temporary file (a nested atomic write)
            raise DiskFull(target) from e
        raise
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: Path, obj) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def append_text(target: Path, text: str) -> None:
    """Append to a log file whole or not at all: a failed write (a full disk) is cut back to the old end, so the
    file never ends in half a line."""
    data = text.encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.fstat(fd).st_size
        try:
            while data:  # os.write may write part of it before the disk is full
                data = data[os.write(fd, data):]
        except OSError as e:
            os.ftruncate(fd, end)
            if e.errno in NO_SPACE:
                raise DiskFull(Path(target)) from e
            raise
    finally:
        os.close(fd)


class _Recorder:
    """A file object for writers that hide why a write failed (torch's C++ writer turns ENOSPC into a RuntimeError
    "unexpected pos"): it keeps the OSError so the caller can raise the real cause."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def torch_save(obj, target: Path) -> None:
    import torch

    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        recorder = _Recorder(f)
        try:
            torch.save(obj, recorder)
        except Exception as e:
            if recorder.error is not None:
                raise recorder.error from e
            raise
