"""The boot store: `$LAUNCHER_CACHE_DIR/calibration/boots.json`, the newest `KEEP` boots.

    {"format": "launcher-boots/1", "boots": [<Boot.to_json()>, … oldest first]}

Two launchers may finish a start at the same moment, so every change is read-modify-write
under an exclusive `fcntl.flock` on `boots.json.lock`, and the file is replaced atomically
(temporary file + `os.replace`): a reader never sees half a file and needs no lock. A file
that does not parse (or holds a boot this version cannot read) is not a traceback: it is moved
aside as `boots.json.corrupt-<time>`, the store starts empty, and the caller gets the sentence
saying so to report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from launcher.calibration.boots import Boot
from launcher.paths import cache_dir

FORMAT = "launcher-boots/1"
KEEP = 200


def default_path() -> Path:
    return cache_dir() / "calibration" / "boots.json"


@dataclass(frozen=True)
class Read:
    """What the store held, and the problem found on the way (a corrupt file set aside)."""

    boots: tuple[Boot, ...]
    problem: str | None = None


class _Corrupt(ValueError):
    pass


class BootStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    # ---- reading ----------------------------------------------------------------------
    def load(self) -> Read:
        """The stored boots; a corrupt file is set aside (under the lock) and reported."""
        try:
            return Read(self._parse())
        except FileNotFoundError:
            return Read(())
        except _Corrupt:
            pass
        with self._locked():
            try:
                return Read(self._parse())  # another launcher may have replaced it meanwhile
            except FileNotFoundError:
                return Read(())
            except _Corrupt as e:
                return Read((), self._set_aside(e))

    def _parse(self) -> tuple[Boot, ...]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise _Corrupt(f"not UTF-8 text ({e.reason})") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise _Corrupt(f"not JSON (line {e.lineno}: {e.msg})") from e
        except RecursionError as e:
            raise _Corrupt("nested too deeply to be a boot store") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise _Corrupt(f"not a {FORMAT} file")
        raw = data.get("boots")
        if not isinstance(raw, list):
            raise _Corrupt("no list of boots")
        out = []
        for i, b in enumerate(raw):
            try:
                out.append(Boot.from_json(b))
            except (ValueError, TypeError) as e:
                raise _Corrupt(f"boot {i}: {e}") from e
        return tuple(out)

    def _set_aside(self, why: _Corrupt) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return f"the boot store {self.path} vanished while being read ({why})"
        return (f"the boot store {self.path} was unreadable ({why}): set aside as {aside.name}; "
                "starting a new one")

    # ---- writing ----------------------------------------------------------------------
    def add(self, boot: Boot) -> tuple[int, str | None]:
        """Append `boot`, keep the newest `KEEP`; (boots now stored, problem found)."""
        with self._locked():
            problem = None
            try:
                boots = list(self._parse())
            except FileNotFoundError:
                boots = []
            except _Corrupt as e:
                problem, boots = self._set_aside(e), []
            boots = [*boots, boot][-KEEP:]
            self._write(boots)
        return len(boots), problem

    def clear(self) -> list[str]:
        """Remove the store and any corrupt copies set aside; what was removed, in words."""
        removed = []
        with self._locked():
            try:
                n = len(self._parse())
                what = f"{n} boot{'s' if n != 1 else ''}"
            except FileNotFoundError:
                n, what = -1, ""
            except _Corrupt as e:
                n, what = 0, f"an unreadable store ({e})"
            if n >= 0:
                self.path.unlink()
                removed.append(f"{what} from {self.path}")
            for aside in sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*")):
                aside.unlink()
                removed.append(f"the unreadable copy {aside}")
        return removed

    def _write(self, boots: list[Boot]) -> None:
        doc: dict[str, Any] = {"format": FORMAT, "boots": [b.to_json() for b in boots]}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
