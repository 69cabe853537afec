#!/usr/bin/env python3
"""Renders the results of bench/compare.sh (or bench/auth_tls.sh) as one Markdown table.

  bench/report.py RESULTS.tsv [META.json]

RESULTS.tsv has one line per (server, phase) with the columns of COLUMNS below; META.json
holds the run's settings, printed above the table. Rows are phases; for each server the
figure, the server's CPU cost per unit of work and its peak RSS during the phase.

When META.json has "pairs": [[title, variant, baseline], ...] (bench/auth_tls.sh), the
table compares those two "servers" row by row instead, with variant/baseline ratios.
"""

import json
import sys

COLUMNS = ["server", "order", "phase", "conns", "tool", "value", "unit", "work", "cpu_s",
           "hwm_kib", "errors", "note"]
SERVERS = ["origin", "nginx", "distribution", "disk"]
GIB = 1 << 30


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (len(COLUMNS) - len(parts))
            rows.append(dict(zip(COLUMNS, parts)))
    return rows


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def fmt(x, unit=""):
    if x is None:
        return "-"
    if unit in ("req/s",) or abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cpu_per_unit(r):
    """CPU µs per request for request rates, CPU s per GiB for byte rates."""
    cpu, work = num(r.get("cpu_s")), num(r.get("work"))
    if cpu is None or not work:
        return None, ""
    if r["unit"] == "req/s":
        return cpu / work * 1e6, "µs/req"
    if r["unit"] == "MiB/s":
        return cpu / (work / GIB), "s/GiB"
    return None, ""


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def render(rows, meta):
    out = []
    if meta:
        out.append("# " + meta.get("title", "Origin benchmark"))
        out.append("")
        for k, v in meta.items():
            if k != "title":
                out.append(f"- {k}: {v}")
        out.append("")
    servers = [s for s in SERVERS if any(r["server"] == s for r in rows)]
    keys = []
    by = {}
    for r in rows:
        k = (float(r["order"] or 0), r["phase"], r["conns"], r["tool"])
        if k not in by:
            by[k] = {}
            keys.append(k)
        by[k][r["server"]] = r
    keys.sort(key=lambda k: (k[0], int(k[2]) if k[2].isdigit() else 0, k[3]))

    head = ["phase", "conns", "tool", "unit"] + servers
    if "origin" in servers:
        head += [f"origin/{s}" for s in servers if s != "origin"]
    head += [f"CPU {s}" for s in servers] + ["CPU unit"]
    head += [f"peak RSS MiB {s}" for s in servers]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join("---" for _ in head) + "|")
    problems = []
    for k in keys:
        cell = by[k]
        any_r = next(iter(cell.values()))
        unit = any_r["unit"]
        vals = {s: num(cell[s]["value"]) if s in cell else None for s in servers}
        line = [k[1], k[2] or "-", k[3] or "-", unit]
        line += [fmt(vals[s], unit) for s in servers]
        if "origin" in servers:
            line += [ratio(vals["origin"], vals[s]) for s in servers if s != "origin"]
        cu = ""
        for s in servers:
            c, u = cpu_per_unit(cell[s]) if s in cell else (None, "")
            cu = cu or u
            line.append(fmt(c))
        line.append(cu or "-")
        for s in servers:
            h = num(cell[s]["hwm_kib"]) if s in cell else None
            line.append(fmt(h / 1024) if h else "-")
        out.append("| " + " | ".join(line) + " |")
        for s in servers:
            if s in cell and (num(cell[s]["errors"]) or 0) > 0:
                problems.append(f"{s}, {k[1]} ({k[3]}, {k[2]} conns): {cell[s]['errors']} "
                                f"errors. {cell[s]['note']}")
    notes = sorted({f"{r['server']}, {r['phase']}: {r['note']}" for r in rows
                    if r["note"] and (num(r["errors"]) or 0) == 0})
    out.append("")
    out.append("Units: req/s and MiB/s are throughput (higher is better); CPU is the server's "
               "user+system CPU per unit of work (µs per request, or seconds per GiB moved; "
               "lower is better), nginx summed over master and workers; peak RSS is VmHWM "
               "during the phase (reset before it), nginx summed over its processes. "
               "Ratios are origin's figure over the peer's: for throughput > 1 means origin "
               "is faster, for RSS < 1 means origin is smaller.")
    if notes:
        out.append("")
        out.append("Notes:")
        out += [f"- {n}" for n in notes]
    if problems:
        out.append("")
        out.append("PROBLEMS (rows with failed requests; their figures are not comparable):")
        out += [f"- {p}" for p in problems]
    return "\n".join(out) + "\n"


def render_pairs(rows, meta):
    out = ["# " + meta.get("title", "Origin benchmark"), ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if k not in ("title", "pairs")]
    out.append("")
    head = ["comparison", "phase", "conns", "tool", "unit", "variant", "baseline",
            "variant/baseline", "CPU variant", "CPU baseline", "CPU unit",
            "peak RSS MiB variant", "peak RSS MiB baseline"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join("---" for _ in head) + "|")
    problems = []
    for title, var, base in meta["pairs"]:
        cells = {}
        for r in rows:
            if r["server"] in (var, base):
                cells.setdefault((r["phase"], r["conns"], r["tool"]), {})[r["server"]] = r
        for (phase, conns, tool), c in cells.items():
            if var not in c or base not in c:
                continue
            a, b = c[var], c[base]
            va, vb = num(a["value"]), num(b["value"])
            ca, unit = cpu_per_unit(a)
            cb, _ = cpu_per_unit(b)
            ha, hb = num(a["hwm_kib"]), num(b["hwm_kib"])
            out.append("| " + " | ".join([
                f"{title} ({var} vs {base})", phase, conns, tool, a["unit"], fmt(va, a["unit"]),
                fmt(vb, b["unit"]), ratio(va, vb), fmt(ca), fmt(cb), unit or "-",
                fmt(ha / 1024) if ha else "-", fmt(hb / 1024) if hb else "-"]) + " |")
            for r in (a, b):
                if (num(r["errors"]) or 0) > 0:
                    problems.append(f"{r['server']}, {phase} ({tool}, {conns} conns): "
                                    f"{r['errors']} errors. {r['note']}")
    out.append("")
    out.append("variant/baseline: > 1 means the variant (auth, TLS) is faster for throughput; "
               "CPU is server CPU per unit of work (µs per request, s per GiB).")
    if problems:
        out.append("")
        out.append("PROBLEMS (rows with failed requests; their figures are not comparable):")
        out += [f"- {p}" for p in sorted(set(problems))]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rows = load(sys.argv[1])
    meta = {}
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            meta = json.load(f)
    if meta.get("pairs"):
        sys.stdout.write(render_pairs(rows, meta))
    else:
        sys.stdout.write(render(rows, meta))


if __name__ == "__main__":
    main()
