"""The bench outputs of round 12's pairs side by side: ceilings, tokens/s, ratios and MFU per file.

    python3 docs/results/amx-perf/round12/table.py docs/results/amx-perf/round12/bench-zen5-*-final-pair*.txt
"""
import re, sys

for path in sys.argv[1:]:
    rows = {}
    for line in open(path):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 6 or not cells[0][:1].isalpha() or cells[0] == "measurement":
            continue
        what = ("ceiling " if "ceiling" in cells[0] else ("train " if "train" in cells[0] else "forward ")) + cells[1]
        rows[what] = cells[4] if "ceiling" in cells[0] else f"{cells[2]} tok/s {cells[3]} MFU {cells[5]}"
    print(path.rsplit("/", 1)[-1])
    for k, v in rows.items():
        print(f"  {k:32s} {v}")
