"""Old → new final rewards of ``ospo-gym bench`` results, for reruns after a change of defaults.

Reads pairs of ``results.json`` files (an old one, kept aside before the rerun, and the new one the rerun wrote)
and prints one Markdown table per pair: each task × agent's final reward (mean ± std over seeds), seeds reaching
the threshold, and the change of the mean. Usage (the table in results/headtohead/std_ddof_rerun.md)::

    python benchmarks/compare_bench.py --label main OLD/results.json NEW/results.json \\
        [--label budget OLD2/results.json NEW2/results.json ...] > out.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _summary(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if "summary" not in data:
        raise SystemExit(f"{path} is not an ospo-gym bench results.json (no 'summary'); pass the file bench wrote")
    return data["summary"]


def table(label: str, old_path: Path, new_path: Path) -> str:
    """One Markdown table: a row per task × variant present in both files."""
    old, new = _summary(old_path), _summary(new_path)
    shifted = any("shift_final_mean" in v for entry in new.values() for v in entry["variants"].values())
    lines = [
        f"### {label}",
        "",
        "| task | agent | final reward, old | final reward, new | change | reached old → new |"
        + (" shifted eval, old → new |" if shifted else ""),
        "|---|---|---|---|---|---|" + ("---|" if shifted else ""),
    ]
    for task, entry in new.items():
        before = old.get(task, {}).get("variants", {})
        for name, now in entry["variants"].items():
            was = before.get(name)
            if was is None:
                continue
            change = now["final_mean"] - was["final_mean"]
            lines.append(
                f"| {task} | `{name}` | {was['final_mean']:.3f} ± {was['final_std']:.3f} | "
                f"{now['final_mean']:.3f} ± {now['final_std']:.3f} | {change:+.3f} | "
                f"{was['reached']}/{was['n']} → {now['reached']}/{now['n']} |"
                + (f" {was.get('shift_final_mean', float('nan')):.3f} → {now.get('shift_final_mean', float('nan')):.3f} |"
                   if shifted else "")
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--label", nargs=3, action="append", metavar=("NAME", "OLD", "NEW"), required=True,
        help="a name for the table, the old results.json and the new one (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for label, old, new in args.label:
        for path in (old, new):
            if not Path(path).is_file():
                print(f"compare_bench: {path} does not exist; pass the results.json files bench wrote", file=sys.stderr)
                return 2
        print(table(label, Path(old), Path(new)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
