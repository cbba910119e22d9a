"""Extract a CRD's openAPIV3Schema (one version) into the JSON the tests validate against.

    python tests/data/k8s/extract_crd_schema.py CRD.yaml VERSION OUT.json

Descriptions are dropped (they do not take part in validation and are most of the bytes);
everything else is the CRD's schema as published. Sources and commits: NOTICE.md.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(crd_path: str, version: str, out_path: str) -> None:
    with open(crd_path, encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = {"group": crd["spec"]["group"], "kind": crd["spec"]["names"]["kind"],
              "version": version, "openAPIV3Schema": strip(v["schema"]["openAPIV3Schema"])}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(schema, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
