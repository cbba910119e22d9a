"""An `EngineCommand` as one POSIX shell line, with some values left to the shell.

Values the emitter cannot know (node 0's address, a pod's rank) enter the command as shell
parameter expansions — `${LWS_LEADER_ADDRESS}`, `${MASTER_ADDR:?…}` — named by the caller as
`live`; everything else is quoted with `shlex.quote`, a `${…}` of the plan's own included. A
word holding a live expansion is written in double quotes around it and single quotes around
the rest, so the shell expands that and nothing else, and `shlex.split` of the line gives back
the argv word for word (the tests' check).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection

from launcher.planner.plan import EngineCommand

# ${NAME} or ${NAME:?message}: the message may hold letters, digits, spaces and . , ' -
EXPANSION = re.compile(r"\$\{[A-Z_][A-Z0-9_]*(?::\?[A-Za-z0-9 .,'_-]*)?\}")


def expand(name: str, *, required: str | None = None) -> str:
    """`${name}`, or `${name:?required}` (the shell stops with that message when unset)."""
    word = f"${{{name}:?{required}}}" if required else f"${{{name}}}"
    assert EXPANSION.fullmatch(word), word
    return word


def quote(word: str, live: Collection[str] = ()) -> str:
    """`word` for the shell: the expansions named in `live` expanded, everything else literal
    (a `${HOME}` the plan itself holds stays text)."""
    parts: list[str] = []
    pos = 0
    for m in EXPANSION.finditer(word):
        if m.group(0) not in live:
            continue
        if m.start() > pos:
            parts.append(shlex.quote(word[pos:m.start()]))
        parts.append(f'"{m.group(0)}"')
        pos = m.end()
    if pos < len(word) or not parts:
        parts.append(shlex.quote(word[pos:]))
    return "".join(parts)


def line(cmd: EngineCommand, live: Collection[str] = ()) -> str:
    """`env -u X … K=V … argv…`, as `EngineCommand.shell`, with the `live` expansions
    expanded by the shell."""
    pre = [*(f"-u {k}" for k in cmd.unset),
           *(f"{k}={quote(v, live)}" for k, v in cmd.env.items())]
    return " ".join(["env", *pre, *(quote(a, live) for a in cmd.argv)])
