"""The segment layout the compiled core exports (shmring._ring.LAYOUT, built with
offsetof from csrc/shmr_layout.h): consistent with itself and with layout v1."""

from __future__ import annotations

from shmring import _ring
from shmring._ring import LAYOUT, LAYOUT_BLOCK, LAYOUT_PAGE

REGIONS = ("header", "prod", "tail", "data_ec", "space_ec", "ctl", "cslot", "release", "qheader", "lane")


def test_every_field_lies_inside_its_region_without_overlap():
    for region in REGIONS:
        start, size = LAYOUT[region]
        fixed = region not in ("cslot", "release", "lane")  # those count from their own record
        base = start if fixed else 0
        spans = sorted((off, sz, name) for name, (off, sz) in LAYOUT.items()
                       if name.startswith(region + "."))
        assert spans, region
        end = base
        for off, sz, name in spans:
            assert off >= end, f"{name} overlaps the field before it"
            assert off + sz <= base + size, f"{name} runs past its region"
            assert off % min(sz, 8) == 0, f"{name} is misaligned"
            end = off + sz


def test_control_blocks_follow_the_header_one_block_each():
    assert LAYOUT["header"] == (0, LAYOUT_PAGE)
    starts = [LAYOUT[r][0] for r in ("prod", "tail", "data_ec", "space_ec", "ctl", "cslot")]
    assert starts == [LAYOUT_PAGE + k * LAYOUT_BLOCK for k in range(6)]
    assert all(LAYOUT[r][1] == LAYOUT_BLOCK for r in ("prod", "tail", "data_ec", "space_ec", "ctl", "cslot"))
    assert LAYOUT["release"][1] == 16


def test_layout_v1_header_offsets():
    # a reader of any version depends on these (version 2 changed the consumer
    # slots and control words only, so every version's header reads alike)
    assert _ring.LAYOUT_VERSION == 2
    v1 = {"magic": (0, 8), "version": (8, 4), "header_size": (12, 4), "segment_size": (16, 8),
          "capacity": (24, 8), "record_size": (32, 8), "stride": (40, 8), "record_align": (48, 4),
          "mode": (52, 4), "overflow": (56, 4), "max_consumers": (60, 4), "consumers_offset": (64, 8),
          "releases_offset": (72, 8), "slots_offset": (80, 8), "create_time_ns": (88, 8),
          "creator_pid": (96, 4), "descr_len": (100, 4), "descr": (128, _ring.DESCR_MAX)}
    assert {k: LAYOUT[f"header.{k}"] for k in v1} == v1
    assert _ring.LAYOUT_MAGIC.to_bytes(8, "little") == b"SMRRING1"


def test_queue_header_layout():
    """Queue segments: a header page with each eventcount and the ticket on a
    block of their own, then one block per lane."""
    assert LAYOUT["qheader"] == (0, LAYOUT_PAGE)
    starts = [LAYOUT[f"qheader.{f}"][0] for f in ("data_ec", "space_ec", "join_ec", "lanes_used", "ticket")]
    assert starts == [k * LAYOUT_BLOCK for k in range(1, 6)]
    assert LAYOUT["lane"] == (LAYOUT_PAGE, LAYOUT_BLOCK)
    fields = sorted((off, sz) for name, (off, sz) in LAYOUT.items() if name.startswith("lane."))
    assert fields == [(0, 8), (8, 8), (16, 8)]
    assert _ring.LAYOUT_QMAGIC.to_bytes(8, "little") == b"SHMRIRQ1"
