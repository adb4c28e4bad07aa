"""Write every artifact to a temporary sibling and rename it into place, so an interrupted or
failed run never leaves a half-written file or folder where the user expects a result."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgesmlp.errors import InputError, OutputExistsError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_parent(path: Path) -> None:
    if not path.parent.exists():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist; create it first")


@contextmanager
def atomic_file(path: str | os.PathLike, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    _check_parent(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name such as {path / 'model.onnx'}")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists: pass --force to overwrite it")
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it takes the place of ``path``."""
    path = Path(path)
    _check_parent(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists: pass --force to replace it, or choose another -o")
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
        _remove(old)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
