"""Walks the cases for every peer, repeats them, keeps the median run and the spread."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback

import peers

from .cases import CASES, SECTIONS, run_cbench
from .machine import OtherLoad, background_load
from .processes import CaseFailed, Resources

RUNS = {
    "quick": dict(lat_n=20000, lat_s=2.0, tp_s=0.8, frame_s=0.8, scale_s=0.8, scale_batch=False, cbench_quick=True,
                  repeats=1, tp_repeats=3, scale_repeats=1),
    "full": dict(lat_n=200000, lat_s=5.0, tp_s=2.0, frame_s=1.5, scale_s=2.0, scale_batch=True, cbench_quick=False,
                 repeats=3, tp_repeats=5, scale_repeats=1),
}


def median_run(runs: list, key: str) -> dict:
    """The run with the median `key` (the lower one of an even count), with every run's value
    in "trials" and their min/median/max."""
    runs = sorted(runs, key=lambda r: r[key])
    mid = dict(runs[(len(runs) - 1) // 2])
    vals = [r[key] for r in runs]
    if len(runs) > 1:
        mid["trials"] = vals
    mid["spread"] = {"key": key, "min": vals[0], "median": mid[key], "max": vals[-1], "runs": len(vals)}
    return mid


class Runner:
    def __init__(self, args) -> None:
        self.args = args
        self.cfg = RUNS["quick" if args.quick else "full"]
        if args.repeats:
            self.cfg = dict(self.cfg, repeats=args.repeats, tp_repeats=args.repeats)
        self.ctx = mp.get_context("spawn")
        self.res = Resources()
        self.results: dict = {"latency": [], "throughput": [], "frames": [], "scaling": [], "cbench": None}
        reg = peers.registry()
        self.peers = [p for name, p in reg.items() if not args.peers or name in args.peers]
        self.missing = {p.name: why for p in self.peers if (why := p.available())}
        self.sections = args.only or SECTIONS

    def log(self, msg):
        if not self.args.silent:
            print(msg, file=sys.stderr, flush=True)

    def _wait_quiet(self):
        if not self.args.wait_quiet:
            return
        waited = 0.0
        while waited < self.args.wait_quiet:
            bg = background_load()
            if bg["busy"] is None or bg["busy"] <= 0.10:
                return
            time.sleep(1.0)
            waited += 1.25

    def case(self, case, peer, config=None):
        """Run one case for one peer (in one configuration) as often as the run asks; keep the
        median run, the others' values going to row["trials"]."""
        row = {"impl": peer.name, "variant": case.variant}
        if config:
            row["config"] = config
        if peer.name in self.missing:
            row["status"] = f"skipped: {self.missing[peer.name]}"
            self.results[case.section].append(row)
            return row
        params = dict(case.params)
        if config:
            params["config"] = config
        runs = []
        for _ in range(self.cfg[case.repeats]):
            r = self._measure(case, peer, config, params)
            runs.append(r)
            if r["status"] != "ok":
                break
        ok = [r for r in runs if r["status"] == "ok"]
        best = median_run(ok, case.key) if ok else runs[-1]
        if ok and len(ok) < len(runs):
            best["failed_runs"] = len(runs) - len(ok)
        self.results[case.section].append(best)
        return best

    def _measure(self, case, peer, config, params):
        """One run, re-run while other processes disturb it, up to --retries times; the least
        disturbed run is kept."""
        label = case.variant + (f" [{config}]" if config else "")
        best = None
        for attempt in range(1 + self.args.retries):
            self._wait_quiet()
            r = {"impl": peer.name, "variant": case.variant}
            if config:
                r["config"] = config
            t = time.monotonic()
            meter = OtherLoad()
            try:
                r.update(case.run(self.ctx, self.res, peer.name, self.cfg, **params))
                r["status"] = "ok"
            except CaseFailed as exc:
                r["status"] = f"failed: {str(exc).splitlines()[0]}"
                self.log(f"  !! {peer.name} {label}: {exc}")
            except Exception as exc:
                r["status"] = f"failed: {type(exc).__name__}: {exc}"
                self.log(f"  !! {peer.name} {label}: {traceback.format_exc()}")
            finally:
                self.res.unlink_rings()
            r.update(meter.stop())
            r["attempt"] = attempt + 1
            self.log(f"  {case.section:10s} {peer.name:14s} {label:36s} {r['status'][:40]:8s} "
                     f"{time.monotonic() - t:5.1f} s  (other processes used {100 * r['other_load']:.0f}% of the "
                     f"CPUs, steal {100 * r['steal']:.0f}%)")
            if best is None or (r["status"] == "ok" and (best["status"] != "ok" or r["other_load"] < best["other_load"])):
                best = r
            if r["status"] != "ok" or r["other_load"] <= 0.10:
                break
        return best

    def run(self):
        titles = {"latency": "(a) latency", "throughput": "(b) throughput", "frames": "(c) 6 MB frames",
                  "scaling": "(d) scaling"}
        for section in SECTIONS:
            if section not in self.sections:
                continue
            if section == "c":
                self.run_c()
                continue
            self.log(titles[section])
            for case in CASES:
                if case.section != section or (case.only and not case.only(self.cfg)):
                    continue
                for peer in self.peers:
                    if case.applies(peer):
                        for config in case.configs or (None,):
                            self.case(case, peer, config)

    def run_c(self):
        self.log("(e) C core")
        runs = []
        for _ in range(self.cfg["repeats"]):
            best = None
            for attempt in range(1 + self.args.retries):
                self._wait_quiet()
                meter = OtherLoad()
                t = time.monotonic()
                r = run_cbench(self.cfg["cbench_quick"])
                r.update(meter.stop())
                self.log(f"  cbench {'ok' if 'skipped' not in r else r['skipped']} {time.monotonic() - t:5.1f} s "
                         f"(other processes used {100 * r['other_load']:.0f}% of the CPUs)")
                if best is None or ("skipped" not in r and r["other_load"] < best["other_load"]):
                    best = r
                if "skipped" in r or r["other_load"] <= 0.10:
                    break
            runs.append(best)
            if "skipped" in best:
                break
        ok = sorted([r for r in runs if "skipped" not in r], key=lambda r: r["ratio_latency_p50"])
        if len(ok) > 1:  # the run with the median ring/floor ratio
            med = dict(ok[(len(ok) - 1) // 2])
            med["trials"] = {k: [r[k] for r in ok] for k in ("ratio_latency_p50", "ring_spsc_single_rps",
                                                             "ring_spsc_batch1024_rps")}
            self.results["cbench"] = med
        else:
            self.results["cbench"] = ok[0] if ok else runs[-1]
