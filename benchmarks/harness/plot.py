"""The four-panel PNG: latency, throughput (default and tuned), frames, scaling."""

from __future__ import annotations

import os

import numpy as np

import peers

from .report import _get, config_of, fmt_rate


def _color(impl: str) -> str:
    try:
        return peers.get(impl.split(" ")[0]).color
    except KeyError:
        return "#333333"


def plot(results: dict, machine: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))

    # (a) latency
    ax = axes[0][0]
    rows = [r for r in results["latency"] if r.get("status") == "ok"]
    if rows:
        labels = [f"{r['impl']}\n{r['variant']}" for r in rows]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["p50_us"] for r in rows], 0.4, color=[_color(r["impl"]) for r in rows], label="p50")
        ax.bar(x + 0.2, [r["p99_us"] for r in rows], 0.4, color=[_color(r["impl"]) for r in rows], alpha=0.45,
               label="p99")
        for xi, r in zip(x, rows):
            ax.text(xi - 0.2, r["p50_us"] * 1.08, f"{r['p50_us']:.2g}", ha="center", fontsize=7)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("one-way latency, us (log)")
        ax.set_title("(a) ping-pong one-way latency, 64-byte record (p50 solid, p99 light)")

    # (b) throughput: per implementation, 1 record and 1024 records per call, default then tuned
    ax = axes[0][1]
    rows = [r for r in results["throughput"] if r.get("status") == "ok" and r["variant"] in ("rec", "batch")]
    if rows:
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        x = np.arange(len(impls))
        bars = ((-0.3, "rec", "default", 1.0, None), (-0.1, "rec", "tuned", 1.0, "//"),
                (0.1, "batch", "default", 0.55, None), (0.3, "batch", "tuned", 0.55, "//"))
        for off, what, config, alpha, hatch in bars:
            vals = []
            for impl in impls:
                r = _get(rows, impl, what, config)
                vals.append(r["records_per_s"] if r else 0)
            if not any(vals):
                continue
            ax.bar(x + off, vals, 0.2, color=[_color(i) for i in impls], alpha=alpha, hatch=hatch,
                   edgecolor="white" if hatch else None)
            for xi, v in zip(x, vals):
                if v:
                    ax.text(xi + off, v * 1.08, fmt_rate(v).strip(), ha="center", fontsize=6, rotation=90)
        ax.set_xticks(x, impls, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(top=ax.get_ylim()[1] * 6)
        ax.set_ylabel("records/s (log), median run")
        tuned_only = all(config_of(r) == "tuned" for r in rows)
        ax.set_title("(b) throughput: 1 record per call (solid), 1024 per call (light)"
                     + ("" if tuned_only else "\ndefault (plain) and tuned: pinned, GC off (hatched)"), fontsize=10)

    # (c) frames
    ax = axes[1][0]
    rows = [r for r in results["frames"] if r.get("status") == "ok"]
    if rows:
        labels = [f"{r['impl']}\n{r['variant']}" for r in rows]
        x = np.arange(len(rows))
        ax.bar(x, [r["GB_per_s"] for r in rows], 0.6, color=[_color(r["impl"]) for r in rows])
        for xi, r in zip(x, rows):
            ax.text(xi, r["GB_per_s"] * 1.08, f"{r['GB_per_s']:.2g}", ha="center", fontsize=7)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("GB/s of 6 MB frames handed over (log)")
        ax.set_title("(c) 6 MB frames: copy vs zero-copy (zc marker: 1 byte touched, nominal GB/s)")

    # (d) scaling
    ax = axes[1][1]
    rows = [r for r in results["scaling"] if r.get("status") == "ok" and "spin" not in r["variant"]]
    series = {}
    for r in rows:
        mode, n, per = r["variant"].split(" ")
        series.setdefault((r["impl"], mode, per), []).append((int(n[:-1]), r["delivered_per_s"]))
    for (impl, mode, per), pts in series.items():
        pts.sort()
        ls = "-" if mode == "queue" else "--"
        mk = "o" if per == "1/call" else "s"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=mk, color=_color(impl),
                label=f"{impl} {mode} {per}")
    if series:
        ax.set_xticks([1, 2, 4])
        ax.set_yscale("log")
        ax.set_xlabel(f"consumers ({machine['cpus_available']} CPUs)")
        ax.set_ylabel("records/s delivered, all consumers (log)")
        ax.set_title("(d) scaling: 1 producer, N consumers")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"shmring vs peers - {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
                 f"numpy {machine['versions']['numpy']}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
