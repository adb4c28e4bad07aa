"""Write every artifact to a temporary sibling and rename it into place, so an interrupted or failed
run never leaves a half-written file or folder where the user expects a result.

An output folder is reserved before any work by an exclusively created lock file beside it
(``.NAME.lock``, holding the writer's PID), so two runs never write the same folder. A lock, or a
``.NAME.partial-PID`` folder, left by a killed run (its PID gone) is removed by the next run that
reserves the same name, and said so.

Every output folder carries a ``.edgesmlp`` marker, and ``--force`` replaces only a folder that does (or an
empty one, or one an older edgesmlp wrote, which its manifest or report names): never a folder of the user's.
An output never is, holds or lies inside anything the job reads (``check_apart``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from edgesmlp.errors import InputError, OutputBusyError, OutputExistsError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_parent(path: Path) -> None:
    if not path.parent.exists():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist; create it first")


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output under a file, or where nothing can be written, or that holds the
    current folder (replacing it would pull the folder the run stands in from under it)."""
    if Path(os.path.realpath(os.getcwd())).is_relative_to(os.path.realpath(path)):
        raise InputError(f"the output {path} is or holds the current folder: name a new folder, such as "
                         f"{Path(path) / 'edgesmlp-out'}")
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write into {path}: it is a file, not a folder; choose another -o")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {path}: {ancestor} is a file, not a folder; choose another -o")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no write permission in {ancestor}; choose another -o")


MARKER = ".edgesmlp"  # in every folder edgesmlp writes: what --force may replace
_OLDER = ("manifest.json", "report.json", "sensitivity.json")  # what an edgesmlp without the marker wrote


def written_by_edgesmlp(folder: Path) -> bool:
    """Whether ``folder`` is one ``--force`` may replace: it carries the marker, is empty, or holds the manifest or
    report of an edgesmlp that wrote no marker yet."""
    if (folder / MARKER).is_file() or not any(folder.iterdir()):
        return True
    for name in _OLDER:
        try:
            content = json.loads((folder / name).read_text()) if (folder / name).is_file() else None
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and ("edgesmlp_manifest" in content
                                          or str(content.get("schema", "")).startswith("edgesmlp.")):
            return True
    return False


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` (with --force) unless edgesmlp wrote it."""
    if path.is_dir() and not path.is_symlink() and not written_by_edgesmlp(path):
        raise OutputExistsError(f"{path} was not written by edgesmlp (it has no {MARKER} marker): --force replaces "
                                "only edgesmlp's own output folders; move it away yourself or choose another -o")


def check_apart(output: Path, reads: Mapping[str, Path | None]) -> None:
    """Refuse an ``output`` that is, holds or lies inside a path the job reads (``reads``: option -> path)."""
    out = Path(os.path.realpath(output))
    for option, path in reads.items():
        if path is None:
            continue
        source = Path(os.path.realpath(path))
        relation = ("is" if out == source else "holds" if source.is_relative_to(out)
                    else "lies inside" if out.is_relative_to(source) else None)
        if relation:
            raise InputError(f"the output {output} {relation} {option} {path}, which this run reads: choose an -o "
                             "outside every input")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _edgesmlp_process(pid: int) -> bool:
    """Whether the live ``pid`` looks like an edgesmlp run (its command line names edgesmlp: the CLI or python -m
    edgesmlp); True where that cannot be read. Only the wording of a refusal depends on it."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"edgesmlp" in command


def _pid_of(path: Path) -> int | None:
    """The PID in a lock file, or at the end of a ``.NAME.partial-PID`` / ``.NAME.old-PID`` name."""
    try:
        text = path.read_text().strip() if path.is_file() and path.suffix == ".lock" else path.name.rsplit("-", 1)[1]
        return int(text)
    except (OSError, ValueError, IndexError):
        return None


def sweep_stale(path: Path) -> list[Path]:
    """Remove what killed runs left beside ``path`` (their PID is gone); return what was removed."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for leftover in path.parent.glob(f".{path.name}.*"):
        pid = _pid_of(leftover)
        if leftover.name.endswith((".lock",)) or ".partial-" in leftover.name or ".old-" in leftover.name:
            if pid is not None and pid != os.getpid() and not _alive(pid):
                _remove(leftover)
                removed.append(leftover)
    return removed


def _try_lock(path: Path) -> Path | None:
    """Create ``.NAME.lock`` exclusively; None when a live run holds it."""
    lock = path.with_name(f".{path.name}.lock")
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _pid_of(lock)
            if owner is not None and owner != os.getpid() and _alive(owner):
                return None
            lock.unlink(missing_ok=True)  # a dead run's, or unreadable: take it over
            continue
        except OSError as e:
            raise InputError(f"cannot write {path}: {e.strerror or type(e).__name__} in {path.parent}; "
                             "choose another -o") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def _made_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; return them, deepest first, for cleanup on failure."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(missing)
        raise InputError(f"cannot write {path}: {e.strerror or type(e).__name__} creating {e.filename or path.parent}; "
                         "choose another -o") from None
    return missing


@contextmanager
def reserved_dir(candidates: Callable[[int], Path], force: bool = False, explicit: bool = True,
                 log: Callable[[str], None] = lambda _: None) -> Iterator[tuple[Path, Path]]:
    """Reserve an output folder; yield it and a temporary folder that becomes it when the block succeeds.

    ``candidates(n)`` names the n-th choice. With ``explicit`` only the first is tried: an existing one is
    replaced only with ``force`` (the old one survives until the new one is complete), and one another
    run is writing is refused. Otherwise the first that neither exists nor is being written is taken.
    A failure or an interrupt removes everything the run created, parent folders included.
    """
    n = 0
    while True:
        path = Path(candidates(n))
        check_writable(path)
        taken = path.exists() and not (explicit and force)
        if taken and explicit:
            raise OutputExistsError(f"{path} exists: pass --force to replace it, or choose another -o")
        if explicit and force:
            check_replaceable(path)
        if not taken:
            made = _made_parents(path)
            for stale in sweep_stale(path):
                log(f"removed {stale}, left behind by a run that was killed")
            lock = _try_lock(path)
            if lock is not None and not (path.exists() and not (explicit and force)):
                break
            if lock is not None:
                lock.unlink(missing_ok=True)
            _remove_empty(made)
            if explicit:
                holder = path.with_name(f".{path.name}.lock")
                owner = _pid_of(holder)
                if lock is None and owner is not None and not _edgesmlp_process(owner):
                    raise OutputBusyError(f"{holder} names process {owner}, which is alive but does not look like "
                                          "edgesmlp (its number may have been reused after the run that locked the "
                                          "folder died): if no "
                                          f"edgesmlp run writes {path}, remove {holder}")
                raise OutputBusyError(f"{path} is being written by another edgesmlp run: wait for it to finish, "
                                      "or choose another -o")
        n += 1
    done = False
    try:
        with atomic_dir(path, force=force) as tmp:
            yield path, tmp
        done = True
    finally:
        lock.unlink(missing_ok=True)
        if not done:
            _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def atomic_file(path: str | os.PathLike, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    _check_parent(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name such as {path / 'model.onnx'}")
    if path.exists() and not path.is_file():  # a device node, FIFO or socket: replacing it could break the system
        raise InputError(f"cannot write {path}: it is not a regular file (a device, FIFO or socket); choose another "
                         "file name")
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
    """Yield an empty temporary folder; on success it takes the place of ``path``.

    Without ``force`` an existing ``path`` is never replaced, even one that appeared while the block ran.
    """
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
        (tmp / MARKER).write_text("written by edgesmlp: `--force` may replace this folder\n")
        if path.exists():
            if not force:
                raise OutputExistsError(f"{path} appeared while this run was writing it: nothing was replaced; "
                                        "choose another -o")
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
        _remove(old)


def strict_json(text: str):
    """``json.loads`` that refuses what a file edgesmlp wrote never holds: a key given twice in one object (the last
    would silently win) and NaN or Infinity (ValueError, naming them)."""
    def pairs(items):
        seen = {}
        for key, value in items:
            if key in seen:
                raise ValueError(f"the key {key!r:.60} is given twice in one object")
            seen[key] = value
        return seen

    def constant(name):
        raise ValueError(f"{name} is not a number JSON allows")

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
