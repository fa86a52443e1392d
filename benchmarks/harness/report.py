"""The text report: a headline of the default figures, then one table per section, then the
targets. Works on a fresh run and on a saved --json alike."""

from __future__ import annotations

import numpy as np

import peers

from .cases import CASES, CONFIGS

SECTIONS = ("latency", "throughput", "frames", "scaling")
TP_LABEL = {"rec": "1 record", "rec-alone": "1, alone", "batch": "1024 rec", "rec-nodt": "1 record"}
CONFIG_TEXT = {
    "default": "not pinned, GC on, the producer makes an isinstance check and one extra call per record "
               "(what a user gets)",
    "tuned": "each process pinned to its own CPU, GC off, bare loops",
}


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:8.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:8.1f} k"
    return f"{v:8.1f}  "


def _r(v):
    return fmt_rate(v).strip()


def fmt_gain(g):
    return "" if g is None else f"x{g:.1f}" if g >= 10 else f"x{g:.2f}"


def _mark(r) -> str:
    """'*' on a row measured while other processes used > 10% of the CPUs."""
    return "*" if (r.get("other_load") or 0) > 0.10 else ""


def config_of(r) -> str:
    # a run saved before the two configurations existed was tuned
    return r.get("config", "tuned")


def _get(rows, impl, variant, config=None):
    for r in rows:
        if (r["impl"] == impl and r["variant"] == variant and r.get("status") == "ok"
                and (config is None or config_of(r) == config)):
            return r
    return None


def _ran(L: list, rows, width: int):
    """The rows that ran to the end, in order; for each that did not, its status line goes into L."""
    for r in rows:
        if r.get("status") == "ok":
            yield r
        else:
            L.append(f"  {r['impl'] + _mark(r):16s} {r['variant']:{width}s} {r['status']}")


def _gain_over(rows, r, key):
    """shmring's figure over this peer's in the same variant (None for shmring itself)."""
    base = _get(rows, "shmring", r["variant"])
    return None if r["impl"] == "shmring" or not base else base[key] / r[key]


def _spread(r, key):
    """(min, median, max) of the runs behind a row."""
    tr = r.get("trials") or [r[key]]
    return min(tr), r[key], max(tr)


def note_for(section, r) -> str:
    try:
        peer = peers.get(r["impl"])
    except KeyError:
        peer = None
    text = peer.note(section, r["variant"]) if peer else None
    if text is None:
        for c in CASES:
            if c.section == section and c.variant == r["variant"]:
                text = c.note
                break
    if r.get("received") is not None and r["received"] != r["records"]:
        text = (text + "; " if text else "") + f"COUNTS DIFFER: sent {r['records']}, received {r['received']}"
    if r.get("failed_runs"):
        text = (text + "; " if text else "") + f"{r['failed_runs']} run(s) failed"
    return text or ""


def headline(results: dict) -> list:
    tp = results["throughput"]
    L = []
    d1, t1 = _get(tp, "shmring", "rec", "default"), _get(tp, "shmring", "rec", "tuned")
    da = _get(tp, "shmring", "rec-alone", "default")
    db, tb = _get(tp, "shmring", "batch", "default"), _get(tp, "shmring", "batch", "tuned")
    if not (d1 or db):
        return L
    L.append("Default configuration: " + CONFIG_TEXT["default"])
    if d1:
        lo, med, hi = _spread(d1, "records_per_s")
        line = f"  shmring, 1 record per call        {_r(med):>9s}/s" + (f" (runs {_r(lo)}-{_r(hi)})" if d1.get("trials") else "")
        if t1:
            line += f"; tuned {_r(t1['records_per_s'])}/s"
        L.append(line)
        if da:
            L.append(f"  same producer, no consumer        {_r(da['records_per_s']):>9s}/s -> delivered across "
                     f"processes / producer alone = {med / da['records_per_s']:.2f}")
        best = max((r for r in tp if r["variant"] == "rec" and r["impl"] != "shmring" and config_of(r) == "default"
                    and r.get("status") == "ok"), key=lambda r: r["records_per_s"], default=None)
        if best:
            L.append(f"  fastest peer, 1 record per call   {_r(best['records_per_s']):>9s}/s ({best['impl']}): "
                     f"shmring {fmt_gain(med / best['records_per_s'])}")
    if db:
        lo, med, hi = _spread(db, "records_per_s")
        line = f"  shmring, 1024 records per call    {_r(med):>9s}/s"
        if db.get("trials"):
            line += f" (runs {_r(lo)}-{_r(hi)}), slowest run / median = {lo / med:.2f}"
        if tb:
            tlo, tmed, _ = _spread(tb, "records_per_s")
            line += f"; tuned {_r(tmed)}/s" + (f", slowest / median {tlo / tmed:.2f}" if tb.get("trials") else "")
        L.append(line)
    L.append("")
    return L


def throughput_table(tp: list) -> list:
    L = []
    runs = max((r.get("spread", {}).get("runs", 1) for r in tp if r.get("status") == "ok"), default=1)
    L.append("(b) Throughput, one producer -> one consumer, records/s"
             + (f": median of {runs} runs (slowest-fastest)" if runs > 1 else ", one run each"))
    for name in ("default", "tuned"):
        L.append(f"    {name + ':':9s}{CONFIG_TEXT[name]}")
    L.append(f"  {'implementation':16s} {'per call':9s} {'default':>31s} {'tuned':>31s} {'gain d':>7s} "
             f"{'gain t':>7s}  note")
    variants = list(dict.fromkeys(r["variant"] for r in tp))
    variants.sort(key=lambda v: list(TP_LABEL).index(v) if v in TP_LABEL else 99)
    for what in variants:
        impls = list(dict.fromkeys(r["impl"] for r in tp if r["variant"] == what))
        for impl in impls:
            rows = [r for r in tp if r["variant"] == what and r["impl"] == impl]
            bad = [r for r in rows if r.get("status") != "ok"]
            label = TP_LABEL.get(what, what)
            if bad and len(bad) == len(rows):
                L.append(f"  {impl + _mark(bad[0]):16s} {label:9s} {bad[0]['status']}")
                continue
            cells, gains, mark = [], [], ""
            for config in CONFIGS:
                r = _get(rows, impl, what, config)
                if not r:
                    cells.append("-")
                    gains.append("")
                    continue
                mark = mark or _mark(r)
                lo, med, hi = _spread(r, "records_per_s")
                cells.append(f"{_r(med)} ({_r(lo)}-{_r(hi)})" if r.get("trials") else _r(med))
                base = _get(tp, "shmring", what, config)
                gains.append(fmt_gain(base["records_per_s"] / med) if base and impl != "shmring" else "")
            note = note_for("throughput", rows[0])
            if bad:
                note = (note + "; " if note else "") + f"{config_of(bad[0])}: {bad[0]['status']}"
            L.append(f"  {impl + mark:16s} {label:9s} {cells[0]:>31s} {cells[1]:>31s} {gains[0]:>7s} {gains[1]:>7s}"
                     f"  {note}")
    for config in CONFIGS:
        one, alone = _get(tp, "shmring", "rec", config), _get(tp, "shmring", "rec-alone", config)
        b = _get(tp, "shmring", "batch", config)
        parts = []
        if one and alone:
            parts.append(f"delivered across processes / producer alone {one['records_per_s'] / alone['records_per_s']:.2f}")
        if b and b.get("trials"):
            lo, med, _ = _spread(b, "records_per_s")
            parts.append(f"1024 per call: slowest run / median {lo / med:.2f}")
        if parts:
            L.append(f"  shmring {config}: " + "; ".join(parts))
    L.append("")
    return L


def report(results: dict, machine: dict, cfg_name: str) -> tuple[str, list]:
    L = []
    m = machine
    L.append(f"Machine: {m['cpu']}, {m['cores']} cores ({m['cpus_available']} usable)"
             f"{', virtualized' if m.get('virtualized') else ''}; Linux {m['kernel']}; Python {m['python']}; "
             f"numpy {m['versions']['numpy']}")
    L.append("Peers: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "numpy" and v)
             + f"; shmring commit {m.get('commit')}; run: {cfg_name}")
    if m.get("nice") is not None:
        L.append(f"Benchmark processes ran at nice {m['nice']}")
    if m.get("loadavg"):
        L.append("Load average at the start: " + " ".join(f"{x:.2f}" for x in m["loadavg"])
                 + (" / at the end: " + " ".join(f"{x:.2f}" for x in m["loadavg_end"]) if m.get("loadavg_end") else ""))
    bgs = [r["other_load"] for sec in SECTIONS for r in results.get(sec, []) if r.get("other_load") is not None]
    if bgs:
        st = [r["steal"] for sec in SECTIONS for r in results.get(sec, []) if r.get("steal") is not None]
        busy = sum(1 for b in bgs if b > 0.10)
        warn = f"  WARNING: {busy} of {len(bgs)} rows ran on a busy machine (marked *)" if busy else ""
        L.append(f"Other processes' share of the CPUs during the cases: median {100 * np.median(bgs):.0f}%, "
                 f"max {100 * max(bgs):.0f}% (steal max {100 * max(st or [0]):.0f}%){warn}")
    L.append("gain: how many times better shmring is (peer/shmring for latency, shmring/peer for rates); "
             ">1 = shmring better")
    L.append("")
    L += headline(results)

    lat = results["latency"]
    if lat:
        L.append("(a) One-way latency, ping-pong between two pinned processes, RTT/2, 64-byte record (us)")
        L.append(f"  {'implementation':16s} {'wait':6s} {'p50':>8s} {'p99':>8s} {'p99.9':>8s} {'gain p50':>9s}  note")
        spin = _get(lat, "shmring", "spin")
        sleep = _get(lat, "shmring", "sleep")
        for r in _ran(L, lat, 6):
            wait = r["variant"].split("-")[0]
            base = spin if wait == "spin" else sleep
            gain = None if r["impl"] == "shmring" or not base else r["p50_us"] / base["p50_us"]
            note = note_for("latency", r)
            if r.get("trials"):
                note += f"; median of {len(r['trials'])} runs, p50 range {min(r['trials']):.2f}-{max(r['trials']):.2f}"
            L.append(f"  {r['impl'] + _mark(r):16s} {wait:6s} {r['p50_us']:8.2f} {r['p99_us']:8.2f} {r['p999_us']:8.2f} "
                     f"{fmt_gain(gain):>9s}  {note}")
        if spin:
            L.append(f"  (the timing loop itself adds ~{spin['loop_overhead_us'] * 1000:.0f} ns to every one-way figure; "
                     f"spinning peers are compared with shmring spin, blocking ones with shmring sleep)")
        L.append("")

    if results["throughput"]:
        L += throughput_table(results["throughput"])

    fr = results["frames"]
    if fr:
        L.append("(c) 6 MB frames (1080x1920x3 uint8), one producer -> one consumer (pinned, GC off)")
        L.append(f"  {'implementation':16s} {'path':13s} {'frames/s':>9s} {'GB/s':>7s} {'gain':>8s}  note")
        for r in _ran(L, fr, 13):
            gain = _gain_over(fr, r, "GB_per_s")
            note = note_for("frames", r)
            if r.get("trials"):
                note += f"; median of {len(r['trials'])}, range {min(r['trials']):.1f}-{max(r['trials']):.1f}"
            L.append(f"  {r['impl'] + _mark(r):16s} {r['variant']:13s} {r['records_per_s']:9.1f} {r['GB_per_s']:7.2f} "
                     f"{fmt_gain(gain):>8s}  {note}")
        L.append("")

    sc = results["scaling"]
    if sc:
        L.append("(d) Scaling: 1 producer, N consumers (not pinned, GC off), records/s delivered to all consumers "
                 "in total")
        L.append(f"  {'implementation':16s} {'case':30s} {'pushed/s':>11s} {'delivered/s':>12s} {'gain':>7s}  per consumer")
        for r in _ran(L, sc, 30):
            gain = _gain_over(sc, r, "delivered_per_s")
            per = " ".join(_r(x) for x in r["per_consumer_per_s"])
            lossless = "" if r["lossless"] else "  LOST RECORDS"
            L.append(f"  {r['impl'] + _mark(r):16s} {r['variant']:30s} {fmt_rate(r['pushed_per_s']):>11s} "
                     f"{fmt_rate(r['delivered_per_s']):>12s} {fmt_gain(gain):>7s}  {per}{lossless}")
        L.append("")

    cb = results.get("cbench")
    if cb:
        L += cbench_table(cb)

    targets = evaluate_targets(results)
    if targets:
        L.append("Targets")
        for t in targets:
            L.append(f"  [{t['verdict']:4s}] {t['target']:60s} measured: {t['measured']}")
    return "\n".join(L), targets


def cbench_table(cb: dict) -> list:
    L = ["(e) C core alone vs the raw floor (benchmarks/cbench.c, two forked processes, pinned)"
         + (" *" if (cb.get("other_load") or 0) > 0.10 else "")]
    if "skipped" in cb:
        L.append(f"  skipped: {cb['skipped']}")
        L.append("")
        return L
    for key, label in (("floor_cacheline_oneway", "floor: one cache line ping-pong"),
                       ("ring_queue_oneway", "ring queue: push/pop ping-pong"),
                       ("ring_broadcast_oneway", "ring broadcast: ping-pong")):
        v = cb[key]
        L.append(f"  {label:36s} one-way p50 {v['p50_ns']:7.1f} ns  p99 {v['p99_ns']:7.1f} ns  "
                 f"p99.9 {v['p999_ns']:8.1f} ns")
    tr = cb.get("trials")
    L.append(f"  {'ratio ring/floor (p50)':36s} {cb['ratio_latency_p50']:.2f}"
             + (f"   (median of {len(tr['ratio_latency_p50'])} runs, range "
                f"{min(tr['ratio_latency_p50']):.2f}-{max(tr['ratio_latency_p50']):.2f})" if tr else ""))
    # the line count and the slot-word design experiment (runs saved before they existed lack them)
    fl = cb["floor_cacheline_oneway"]["p50_ns"]
    for key, label in (("floor_two_lines_oneway", "floor: two lines per hand-off"),
                       ("design_slot_word_56B_oneway", "design: word in the slot, 56 B"),
                       ("design_slot_word_64B_oneway", "design: word in the slot, 64 B")):
        if key in cb:
            L.append(f"  {label:36s} one-way p50 {cb[key]['p50_ns']:7.1f} ns  ({cb[key]['p50_ns'] / fl:.2f}x the floor)")
    L.append(f"  {'floor: memcpy 64 KiB in cache':36s} {cb['memcpy_64k_gbs']:7.2f} GB/s")
    L.append(f"  {'ring SPSC 1 record per push/pop':36s} {fmt_rate(cb['ring_spsc_single_rps'])}records/s")
    if "design_slot_word_56B_spsc_single_rps" in cb:
        d = cb["design_slot_word_56B_spsc_single_rps"]
        L.append(f"  {'design SPSC 1 record per push/pop':36s} {fmt_rate(d)}records/s (56 B; "
                 f"{d / cb['ring_spsc_single_rps']:.2f}x the ring)")
    L.append(f"  {'ring SPSC 1024-record batches':36s} {fmt_rate(cb['ring_spsc_batch1024_rps'])}records/s"
             f" = {cb['ring_spsc_batch1024_gbs']:.2f} GB/s ({cb['ratio_bandwidth']:.2f} of memcpy)")
    if tr:
        L.append(f"  {'(throughput ranges over the runs)':36s} 1 record {min(tr['ring_spsc_single_rps']) / 1e6:.2f}-"
                 f"{max(tr['ring_spsc_single_rps']) / 1e6:.2f} M/s, batches "
                 f"{min(tr['ring_spsc_batch1024_rps']) / 1e6:.0f}-{max(tr['ring_spsc_batch1024_rps']) / 1e6:.0f} M/s")
    L.append("")
    return L


def evaluate_targets(results: dict) -> list:
    T = []

    def add(target, ok, measured):
        T.append({"target": target, "verdict": "n/a" if ok is None else ("MET" if ok else "MISS"),
                  "measured": measured})

    lat, tp = results["latency"], results["throughput"]
    spin, sleep = _get(lat, "shmring", "spin"), _get(lat, "shmring", "sleep")
    iox, q, pipe = _get(lat, "iceoryx2", "spin"), _get(lat, "mp.Queue", "sleep"), _get(lat, "mp.Pipe", "sleep")
    if spin:
        add("one-way p50, spinning wait <= 1 us", spin["p50_us"] <= 1.0, f"{spin['p50_us']:.2f} us")
        if iox:
            g = iox["p50_us"] / spin["p50_us"]
            add(">= 3x better p50 than iceoryx2 (polling)", g >= 3, f"x{g:.1f} ({iox['p50_us']:.2f} us)")
        if q:
            g = q["p50_us"] / spin["p50_us"]
            add(">= 50x better p50 than mp.Queue", g >= 50, f"x{g:.1f} ({q['p50_us']:.2f} us)")
    if sleep and pipe:
        add("sleeping waits better than mp.Pipe (p50)", sleep["p50_us"] < pipe["p50_us"],
            f"{sleep['p50_us']:.2f} us vs {pipe['p50_us']:.2f} us (p99 {sleep['p99_us']:.1f} vs {pipe['p99_us']:.1f})")
    d1, da = _get(tp, "shmring", "rec", "default"), _get(tp, "shmring", "rec-alone", "default")
    if d1 and da:
        g = d1["records_per_s"] / da["records_per_s"]
        add("default, 1/call: delivered >= 0.85x the producer alone", g >= 0.85,
            f"{g:.2f} ({_r(d1['records_per_s'])}/s vs {_r(da['records_per_s'])}/s)")
    db = _get(tp, "shmring", "batch", "default")
    if db:
        lo, med, _ = _spread(db, "records_per_s")
        n = len(db.get("trials") or [1])
        add(f"default, 1024/call: >= 175 M records/s (median of {n})", med >= 175e6, f"{med / 1e6:.1f} M/s")
        add("default, 1024/call: slowest run >= 0.7x the median", (lo >= 0.7 * med) if n > 1 else None,
            f"{lo / med:.2f} ({lo / 1e6:.1f} M/s)" if n > 1 else "one run: no spread")
    r1 = _get(tp, "shmring", "rec", "tuned")
    if r1:
        add("tuned, >= 3 M records/s, one record per Python call", r1["records_per_s"] >= 3e6,
            f"{r1['records_per_s'] / 1e6:.2f} M/s")
    rb = _get(tp, "shmring", "batch", "tuned")
    if rb:
        add("tuned, >= 175 M records/s in 1024-record batches", rb["records_per_s"] >= 175e6,
            f"{rb['records_per_s'] / 1e6:.1f} M/s")
        ib = _get(tp, "iceoryx2", "batch", "tuned")
        if ib:
            g = rb["records_per_s"] / ib["records_per_s"]
            add("tuned, >= 2x iceoryx2 in 1024-record batches", g >= 2, f"x{g:.2f} ({ib['records_per_s'] / 1e6:.1f} M/s)")
    fr = results.get("frames") or []
    for path in ("copy", "zc fill", "zc marker"):
        sf, xf = _get(fr, "shmring", path), _get(fr, "iceoryx2", path)
        if sf and xf:
            g = sf["records_per_s"] / xf["records_per_s"]
            add(f"6 MB frames, {path}: >= iceoryx2", g >= 1.0,
                f"x{g:.2f} ({sf['records_per_s']:.0f} vs {xf['records_per_s']:.0f} frames/s)")
    ss, xf = _get(fr, "shmring", "zc fill spin"), _get(fr, "iceoryx2", "zc fill")
    if ss and xf:  # the same wait on both sides: iceoryx2's receiver polls
        g = ss["records_per_s"] / xf["records_per_s"]
        add("6 MB frames, zc fill, both polling: >= iceoryx2", g >= 1.0,
            f"x{g:.2f} ({ss['records_per_s']:.0f} vs {xf['records_per_s']:.0f} frames/s)")
    cb = results.get("cbench")
    if cb and "skipped" not in cb:
        add("C core hand-off within 2x of the cache-line floor", cb["ratio_latency_p50"] <= 2.0,
            f"{cb['ratio_latency_p50']:.2f}x ({cb['ring_queue_oneway']['p50_ns']:.0f} ns vs "
            f"{cb['floor_cacheline_oneway']['p50_ns']:.0f} ns)")
    return T
