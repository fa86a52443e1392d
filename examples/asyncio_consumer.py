"""One asyncio task per ring: an event loop consuming three rings fed by another process.

The feeder process pushes sensor readings into two rings and log lines into a third,
then closes them. The event loop reads all three at once without a thread per ring:
``async for`` over one consumer, ``apop_many`` batches on another, ``apop`` on the third. Idle waits are kernel futex waits (io_uring) behind one eventfd, so the
loop sleeps while nothing arrives. Each stream must arrive complete and in order.

    python examples/asyncio_consumer.py [--records N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time

import numpy as np

import shmring

READING = np.dtype([("seq", "<u8"), ("value", "<f8")])
LOGLINE = np.dtype([("text", "S24")])


def feeder(temps: shmring.Ring, volts: shmring.Ring, logs: shmring.Ring, n: int) -> None:
    with temps.producer() as pt, volts.producer() as pv, logs.producer() as pl:
        for i in range(n):
            pt.push((i, 20.0 + i * 0.001), timeout=30)
            if i % 4 == 0:
                pv.push_many(np.array([(j, j * 0.5) for j in range(i, min(i + 4, n))], READING), timeout=30)
            if i % 100 == 0:
                pl.push((f"reading {i}".encode(),), timeout=30)
            if i % 1000 == 0:
                time.sleep(0.01)  # pauses, so the loop also sleeps and is woken
    # leaving the blocks closes the three streams: the consumers see Closed after the drain


async def read_temps(cons) -> list[int]:
    seqs = []
    async for rec in cons:  # ends when the stream closes
        if rec["value"] != 20.0 + int(rec["seq"]) * 0.001:
            raise AssertionError(f"temperature {int(rec['seq'])} has a wrong value")
        seqs.append(int(rec["seq"]))
    return seqs


async def read_volts(cons) -> list[int]:
    seqs = []
    while True:
        try:
            batch = await cons.apop_many(256)  # 1..256 records as they come
        except shmring.Closed:
            return seqs
        if not np.array_equal(batch["value"], batch["seq"] * 0.5):
            raise AssertionError("a voltage batch has wrong values")
        seqs.extend(batch["seq"].tolist())


async def read_logs(cons) -> list[bytes]:
    lines = []
    while True:
        try:
            lines.append(bytes((await cons.apop(timeout=30))["text"]))
        except shmring.Closed:
            return lines


async def consume(consumers) -> tuple:
    return await asyncio.gather(read_temps(consumers[0]), read_volts(consumers[1]), read_logs(consumers[2]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000, help="readings per ring (default 20000)")
    args = ap.parse_args()
    n = args.records

    with shmring.Ring.create(None, READING, 1024, unlink_on_close=True) as temps, \
         shmring.Ring.create(None, READING, 1024, unlink_on_close=True) as volts, \
         shmring.Ring.create(None, LOGLINE, 64, unlink_on_close=True) as logs:
        consumers = [temps.consumer(), volts.consumer(), logs.consumer()]  # before the feeder starts
        child = mp.get_context("spawn").Process(target=feeder, args=(temps, volts, logs, n))
        child.start()
        try:
            t, v, lines = asyncio.run(asyncio.wait_for(consume(consumers), 60))
        finally:
            for c in consumers:
                c.close()
            child.join(30)
            if child.is_alive():
                child.kill()

    want_lines = [f"reading {i}".encode() for i in range(0, n, 100)]
    if t != list(range(n)) or v != list(range(n)) or lines != want_lines or child.exitcode != 0:
        print(f"FAILED: {len(t)} temperatures, {len(v)} voltages, {len(lines)} log lines "
              f"(want {n}, {n}, {len(want_lines)}), feeder exit {child.exitcode}")
        return 1
    print(f"ok: one event loop read 3 rings: {n} + {n} readings and {len(lines)} log lines, "
          f"complete and in order (await backend: {shmring.aio.backend()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
