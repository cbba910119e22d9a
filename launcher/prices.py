"""GPU prices for cost figures: a file the user supplies (`--price-file`), never built in.

Prices change weekly and differ several times over between providers, so the launcher ships
none; `profiles/prices.example.yaml` shows the format with dated, cited list prices. The file
(YAML or JSON) maps a GPU catalog name (or alias) to its on-demand price per GPU-hour:

    H100-80GB: {usd_per_gpu_hour: 2.99, date: 2026-05-07, source: "https://…"}

Every entry needs all three fields: a cost without its date and source cannot be checked.
`parse_prices` is pure (data in, `Prices` out) so the property tests drive it directly;
`load_prices` is the edge that reads the file. Any problem is an `InputError` (exit 2) that
names the entry and the field and says how to fix it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import InputError
from launcher.speed.price import Price

__all__ = ["EXAMPLE", "FIELDS", "Price", "Prices", "load_prices", "parse_prices"]

EXAMPLE = "profiles/prices.example.yaml"
FIELDS = ("usd_per_gpu_hour", "date", "source")


@dataclass(frozen=True)
class Prices:
    path: str
    by_gpu: Mapping[str, Price]

    def get(self, catalog_name: str | None) -> Price | None:
        return None if catalog_name is None else self.by_gpu.get(catalog_name)


def _bad(path: str, where: str, problem: str, fix: str) -> InputError:
    return InputError(f"price file {path}: {where} {problem}",
                      fix=f"{fix} Each entry is `GPU: {{usd_per_gpu_hour: 2.5, date: "
                          f"2026-05-07, source: \"https://…\"}}` (see {EXAMPLE}).",
                      hint=f"launcher fit MODEL --price-file {EXAMPLE}")


def parse_prices(data: object, path: str = "<prices>") -> Prices:
    """Validate a parsed price file. GPU names resolve through the catalog's aliases."""
    from launcher.hardware.catalog import find_gpu, load_catalog

    if isinstance(data, Mapping) and isinstance(data.get("prices"), Mapping):
        data = data["prices"]  # a `prices:` wrapper is allowed (room for a schema_version)
    if not isinstance(data, Mapping) or not data:
        raise _bad(path, "the top level", "is not a mapping of GPU names to prices",
                   "Write one entry per GPU type.")
    out: dict[str, Price] = {}
    for name, entry in data.items():
        if name in ("schema_version", "prices"):
            continue
        gpu = find_gpu(str(name))
        if gpu is None:
            known = ", ".join(load_catalog())
            raise _bad(path, f"GPU {name!r}", f"is not in the GPU catalog (known: {known})",
                       "Use a catalog name or alias from profiles/gpus.yaml.")
        if not isinstance(entry, Mapping):
            raise _bad(path, f"entry {name!r}", "is not a mapping",
                       "Give usd_per_gpu_hour, date and source.")
        for f in FIELDS:
            if entry.get(f) is None or entry.get(f) == "":
                raise _bad(path, f"entry {name!r}", f"has no `{f}`", f"Add `{f}`.")
        price = entry["usd_per_gpu_hour"]
        if isinstance(price, bool) or not isinstance(price, int | float) \
                or not math.isfinite(price) or price <= 0:
            raise _bad(path, f"entry {name!r} field `usd_per_gpu_hour`",
                       f"is {price!r}, not a positive number of US dollars",
                       "Give the price per GPU per hour as a number, e.g. 2.49.")
        date = entry["date"]
        if isinstance(date, dt.datetime):
            date = date.date()
        if isinstance(date, dt.date):
            date = date.isoformat()
        try:
            dt.date.fromisoformat(str(date))
        except ValueError:
            raise _bad(path, f"entry {name!r} field `date`", f"is {date!r}, not a date",
                       "Give the day the price was read as YYYY-MM-DD.") from None
        source = entry["source"]
        if not isinstance(source, str) or not source.strip():
            raise _bad(path, f"entry {name!r} field `source`", f"is {source!r}, not text",
                       "Give the page the price was read from.")
        if gpu.name in out:
            raise _bad(path, f"GPU {name!r}", f"names {gpu.name} a second time",
                       "Keep one entry per GPU type.")
        out[gpu.name] = Price(gpu.name, float(price), str(date), source.strip())
    if not out:
        raise _bad(path, "the file", "has no price entries", "Add one entry per GPU type.")
    return Prices(path, out)


def load_prices(path: str | Path) -> Prices:
    """Read and validate a price file (YAML, or JSON, which YAML reads too)."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read price file {p}: {e.strerror or e}",
                         fix="Give the path of a YAML or JSON price file.",
                         hint=f"launcher fit MODEL --price-file {EXAMPLE}") from e
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (ValueError, yaml.YAMLError) as e:
        raise _bad(str(p), "the file", f"is not valid YAML/JSON ({e})".replace("\n", " "),
                   "Fix the syntax.") from None
    return parse_prices(data, str(p))
