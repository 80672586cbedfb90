"""Where gptzoo's public inputs come from, and how a local copy replaces the download.

Real users download tiny-Shakespeare and the GPT-2 BPE ranks. Offline machines (and the tests) point
`GPTZOO_DATA_SOURCE` at a folder that holds the same files under the names below; the sha256 is checked either way.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gptzoo.zoo.errors import GptzooError

SOURCE_ENV = "GPTZOO_DATA_SOURCE"


@dataclass(frozen=True)
class RemoteFile:
    filename: str  # name of the file in a local source folder (GPTZOO_DATA_SOURCE)
    url: str  # where real users download it from
    sha256: str  # expected digest; a mismatch is an error, never silently used


TINY_SHAKESPEARE = RemoteFile(
    "tinyshakespeare.txt",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)
GPT2_RANKS = RemoteFile(
    "gpt2.tiktoken",
    "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)


class SourceError(GptzooError):
    """A data source is missing, unreachable or not what it claims to be."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_copy(remote: RemoteFile) -> Path | None:
    """The file in GPTZOO_DATA_SOURCE, if that variable names a folder holding it."""
    folder = os.environ.get(SOURCE_ENV)
    if folder and (Path(folder) / remote.filename).is_file():
        return Path(folder) / remote.filename
    return None


def read_source(source: str, expected_sha256: str | None = None, timeout: float = 60.0) -> bytes:
    """Bytes of a local path or an http(s) URL, checked against `expected_sha256` when given."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as r:  # noqa: S310 (scheme checked above)
                data = r.read()
        except OSError as e:
            raise SourceError(f"cannot download {source}: {e} (offline? set {SOURCE_ENV} or pass a local path)") from e
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise SourceError(f"source file not found: {path}")
        data = path.read_bytes()
    if expected_sha256 and sha256_bytes(data) != expected_sha256:
        raise SourceError(f"sha256 mismatch for {source}: got {sha256_bytes(data)}, expected {expected_sha256}")
    return data


def fetch(remote: RemoteFile) -> bytes:
    """A public input from the local source folder when set, else from its URL; sha256-checked."""
    path = local_copy(remote)
    return read_source(str(path) if path else remote.url, remote.sha256)
