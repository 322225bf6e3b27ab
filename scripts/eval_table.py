"""Markdown tables of ``scripts/eval_default_model.sh`` outputs, models side by side (for MODELS.md).

python scripts/eval_table.py NAME=DIR [NAME=DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _result(d: Path, name: str) -> dict[str, Any] | None:
    files = list((d / name).glob("*.json"))
    return json.loads(files[0].read_text())["result"] if files else None


def _f(v: Any, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def main(argv: list[str]) -> None:
    runs = [(a.split("=", 1)[0], Path(a.split("=", 1)[1])) for a in argv]
    print("| model | data | NoC@85 | NoC@90 | fail@90 | mIoU@1 | mIoU@3 | mIoU@5 | mIoU@20 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ds in ("grabcut", "davis2016"):
        for name, d in runs:
            r = _result(d, f"interactive_{ds}")
            if r is None:
                continue
            noc, m = r["noc"], r["miou_at_k"]
            n = r["n_items"]
            print(
                f"| {name} | {ds} ({n}) | {noc['0.85']['noc']:.2f} | {noc['0.9']['noc']:.2f} | "
                f"{noc['0.9']['failures']} | " + " | ".join(_f(m.get(k)) for k in ("1", "3", "5", "20")) + " |"
            )
    print()
    kinds = ("point", "box", "stroke", "scribble", "polygon")
    print("| model | data | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for ds in ("grabcut", "davis2016"):
        for name, d in runs:
            r = _result(d, f"prompts_{ds}")
            if r is not None:
                print(f"| {name} | {ds} | " + " | ".join(_f(r["miou"].get(k)) for k in kinds) + " |")
    print()
    for name, d in runs:
        r = _result(d, "granularity_bsds500")
        if r is not None:
            keys = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            print(f"granularity {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in keys.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
