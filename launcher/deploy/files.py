"""Write an emitted file whole or not at all.

The text goes to a temporary file beside the target, is flushed to disk, then renamed over it
(`os.replace`, atomic on POSIX): a reader, `kubectl apply` or an interrupted run never sees half
a manifest, and an existing file stays as it was when anything fails. A path that cannot be
written is an `InputError` (exit 2) naming it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from launcher.errors import InputError


def write_atomic(path: str | Path, text: str) -> Path:
    target = Path(path).expanduser()
    if target.is_dir():
        raise _unwritable(target, "it is a directory")
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else _default_mode()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                   dir=target.parent if str(target.parent) else ".")
    except OSError as e:
        raise _unwritable(target, e.strerror or str(e)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _unwritable(target, e.strerror or str(e)) from None
    return target


def _default_mode() -> int:
    """0o666 less the process's umask, as `open()` would create the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _unwritable(target: Path, why: str) -> InputError:
    return InputError(f"cannot write --emit-file {target}: {why}",
                      fix="Give a path in an existing directory you may write to.",
                      hint="launcher plan MODEL --emit lws --emit-file ./model-lws.yaml")
