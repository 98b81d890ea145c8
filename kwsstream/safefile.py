"""Files read and written safely: the one place that opens a user's non-audio files and replaces
a user's files (keyword sets, search tables and their state).

Reading (:func:`open_regular`, :func:`read_regular`): the file is opened with ``O_NONBLOCK`` (a
FIFO never blocks the open), the *opened* descriptor is checked with ``fstat`` (so what is
checked is what is read), anything but a regular file (a FIFO, ``/dev/zero``, a socket, a
folder) is refused, and reads stop at a hard byte limit (a file that grows while it is read
cannot make them grow without bound).

Writing (:func:`atomic_write`): a symlink is resolved and its target written (the link stays);
the new content goes to an unpredictable temporary file in the target's folder (``mkstemp``:
``O_EXCL``, mode 0600 until done, a short name whatever the target's length), gets the target's
permission bits, owner and group (a new file: ``0666`` less the umask), is flushed to disk, then
renamed over the target: a crash never leaves a half-written file. Temporaries of writers killed
mid-write are removed by :func:`remove_stale_temporaries` (only ours: our pattern, our user,
older than :data:`STALE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import KwsError

STALE_SECONDS = 60.0
"""A temporary file this old is a killed writer's (a save takes well under a second)."""
MAX_NAME_IN_TEMP = 40
"""Characters of the target's name kept in a temporary file's name (the rest: a hash)."""
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (``a FIFO``, ``a character device``, ...)."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def open_regular(path: str | Path, limit: int, error: type[KwsError], what: str = "file") -> BinaryIO:
    """``path`` opened for reading (binary), after checking that the opened file is a regular
    file of at most ``limit`` bytes. Raises ``error`` (one line naming the file)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({_reason(err)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: is {file_kind(st.st_mode)}, not a {what}")
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes is more than a {what} may hold ({limit})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(handle: BinaryIO, limit: int, path: str | Path, error: type[KwsError], what: str = "file") -> bytes:
    """All of ``handle``, refused (``error``) when it holds more than ``limit`` bytes."""
    try:
        data = handle.read(limit + 1)
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({_reason(err)})") from None
    if len(data) > limit:
        raise error(f"{path}: more than a {what} may hold ({limit} bytes)")
    return data


def read_regular(path: str | Path, limit: int, error: type[KwsError], what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``; see :func:`open_regular`)."""
    with open_regular(path, limit, error, what) as handle:
        return read_limited(handle, limit, path, error, what)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# --- writing ---------------------------------------------------------------------------------------

def real_target(path: str | Path) -> Path:
    """Where ``path`` really is: symlinks (also dangling ones) resolved."""
    return Path(os.path.realpath(path))


def umask() -> int:
    """This process's umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore
    os.umask(mask)
    return mask


def temp_prefix(name: str) -> str:
    """The start of a temporary file's name for target ``name``: ``.NAME.``, with a long name
    cut and a hash of it added (so a 255-byte target name still gets a temporary name)."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_IN_TEMP:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        name = name[:MAX_NAME_IN_TEMP // 2] + "~" + digest
    return f".{name}."


TEMP_SUFFIX = ".tmp"


def temp_pattern(target: Path) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives the temporary files of ``target``."""
    return re.compile(rf"^{re.escape(temp_prefix(target.name))}[A-Za-z0-9_]{{6,}}{re.escape(TEMP_SUFFIX)}$")


def remove_stale_temporaries(target: Path, older_than: float = STALE_SECONDS) -> int:
    """Remove the temporaries of ``target`` (resolved) left by killed writers: matching our
    pattern, regular files (never followed), owned by this user, not modified for
    ``older_than`` seconds. Returns how many were removed; never raises."""
    pattern, removed = temp_pattern(target), 0
    now, uid = time.time(), os.geteuid()
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if not pattern.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == uid and now - st.st_mtime >= older_than:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _keep_owner(fd: int, old: os.stat_result | None) -> None:
    """Give the temporary file the target's owner and group (as far as we may: the group when we
    belong to it, the owner only as root)."""
    if old is None:
        return
    uid = old.st_uid if os.geteuid() == 0 else -1
    with contextlib.suppress(OSError):
        os.fchown(fd, uid, old.st_gid)


def existing_regular(path: Path, shown: str | Path, error: type[KwsError]) -> os.stat_result | None:
    """The ``stat`` of the real file ``path``, ``None`` when there is none; refuses anything
    but a regular file (a device, a FIFO, a folder is never replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise error(f"{shown}: cannot be written ({_reason(err)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{shown}: is {file_kind(st.st_mode)}; only a regular file is replaced")
    return st


@contextlib.contextmanager
def atomic_write(path: str | Path, error: type[KwsError], *, shown: str | Path | None = None,
                 keep_open: Callable[[BinaryIO], None] | None = None) -> Iterator[BinaryIO]:
    """Replace ``path`` (its real target) atomically with what the block writes to the handle
    it gets; see the module docstring. An exception in the block leaves the target as it was.
    ``keep_open``: called with a new handle on the written file, open for appending (the
    state file), which it then owns. Raises ``error`` naming ``shown`` (default ``path``) for a
    target that cannot be written (no folder, not a regular file, no temporary file); an
    :class:`OSError` while writing (a full disk) propagates, the target untouched."""
    shown = path if shown is None else shown
    real = real_target(path)
    folder = real.parent
    if not folder.is_dir():
        raise error(f"{shown}: folder {folder} does not exist")
    old = existing_regular(real, shown, error)
    mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(real.name), suffix=TEMP_SUFFIX, dir=folder)
    except OSError as err:
        raise error(f"{shown}: cannot be written in {folder} ({_reason(err)})") from None
    handle = os.fdopen(fd, "w+b")
    try:
        _keep_owner(fd, old)
        os.fchmod(fd, mode)
        yield handle
        handle.flush()
        os.fsync(fd)
        os.replace(tmp, real)
    except BaseException:
        handle.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if keep_open is not None:
        handle.seek(0, os.SEEK_END)
        keep_open(handle)  # the same open file, now under the target's name
    else:
        handle.close()
    with contextlib.suppress(OSError):  # the rename itself to disk
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
