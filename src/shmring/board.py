"""shmring.Board: the latest value per key, readable and writable by every process.

The compiled half (``_ring.BoardCore``) has the hot paths (read, write, view,
wait); this layer adds creation, key names, pickling, watch() and stats.
"""

from __future__ import annotations

import errno
import json
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from . import _ring
from ._api import (DEFAULT_SPIN, SHM_DIR, _check_dtype, _check_name, _check_owner, _decode_dtype, _encode_dtype,
                   _shm_free_bytes)
from ._api import unlink as _unlink
from .errors import CorruptRingError

DEFAULT_COPIES = 2


def _check_keys(keys: Any) -> tuple[tuple, bool]:
    """(keys as a tuple, whether they are str keys)."""
    if isinstance(keys, (int, np.integer)) and not isinstance(keys, bool):
        n = int(keys)
        if not 1 <= n <= _ring.BOARD_MAX_KEYS:
            raise ValueError(f"a board needs 1..{_ring.BOARD_MAX_KEYS} keys, got {n}")
        return tuple(range(n)), False
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(f"keys must be an int n (keys 0..n-1) or a sequence of str, not {type(keys).__name__}")
    keys = tuple(keys)
    if not keys:
        raise ValueError("a board needs at least one key")
    for k in keys:
        if not isinstance(k, str):
            raise TypeError(f"key names must be str, not {type(k).__name__} ({k!r})")
        if not k:
            raise ValueError("key names may not be empty")
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"key names must be distinct: {dup!r} appears more than once")
    if len(keys) > _ring.BOARD_MAX_KEYS:
        raise ValueError(f"a board holds at most {_ring.BOARD_MAX_KEYS} keys, got {len(keys)}")
    return keys, True


def _decode_names(blob: bytes, nkeys: int, where: str) -> tuple:
    try:
        names = json.loads(blob.decode("utf-8"))
        if not isinstance(names, list) or len(names) != nkeys or not all(isinstance(k, str) for k in names):
            raise ValueError("not a list of names")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRingError(f"{where}: the board's key names are corrupt ({exc})") from None
    return tuple(names)


class Board(_ring.BoardCore):
    """The latest value per key in POSIX shared memory.

    Create it with :meth:`create`, attach from any process with :meth:`attach`
    (or pass it to a ``multiprocessing.Process``: it pickles by name). Any process
    may write any key (``board[key] = value``); writes of one key are serialised,
    of different keys run in parallel, and a writer never waits for a reader.
    Reads (``board[key]``) never block and never return a torn value.
    """

    @classmethod
    def create(cls, name: str, dtype: Any, keys: int | Sequence[str], *, exist_ok: bool = False,
               permissions: int = 0o600, copies: int = DEFAULT_COPIES, spin: float = DEFAULT_SPIN,
               liveness_interval: float = _ring.DEFAULT_LIVENESS_INTERVAL) -> "Board":
        """A new board. ``keys``: an int n (keys 0..n-1) or distinct str names.
        ``copies`` (2..8): copies kept per key; a read or view of a value stays valid
        through ``copies - 1`` later writes of that key (memory: copies x value size x keys)."""
        name = _check_name(name)
        dt = _check_dtype(dtype)
        keys_t, str_keys = _check_keys(keys)
        if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or \
                not 2 <= int(copies) <= _ring.BOARD_MAX_COPIES:
            raise ValueError(f"copies must be an int in 2..{_ring.BOARD_MAX_COPIES}, got {copies!r}")
        if dt.itemsize > _ring.BOARD_MAX_VALUE:
            raise ValueError(f"values of {dt.itemsize} bytes are too large (at most {_ring.BOARD_MAX_VALUE})")
        descr = _encode_dtype(dt).encode("ascii")
        if len(descr) >= _ring.BOARD_DESCR_MAX:
            raise ValueError(f"dtype {dt} is too complex to store ({len(descr)} bytes of descriptor)")
        names = json.dumps(list(keys_t)).encode("utf-8") if str_keys else b""
        if len(names) > _ring.BOARD_MAX_NAMES:
            raise ValueError(f"the key names take {len(names)} bytes (at most {_ring.BOARD_MAX_NAMES})")
        try:
            m = _ring.BoardMapping.create(name, len(keys_t), dt.itemsize, max(dt.alignment, 1), int(copies),
                                          1 if str_keys else 0, descr, names, permissions)
        except FileExistsError:
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, f"a ring or board named {name!r} already exists") from None
            # joining what is there must not hand our values to whoever made it
            board = cls.attach(name, spin=spin, liveness_interval=liveness_interval, owner_only=True,
                               permissions=permissions)
            if board.dtype != dt or board.keys != list(keys_t):
                desc = f"dtype={board.dtype}, {len(board)} keys"
                board.close()
                raise FileExistsError(errno.EEXIST, f"board {name!r} exists with {desc}, not dtype={dt}, "
                                                    f"{len(keys_t)} keys (or other key names)") from None
            return board
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                free = _shm_free_bytes()
                raise OSError(errno.ENOSPC, f"not enough shared memory for board {name!r}: needs about "
                                            f"{len(keys_t) * int(copies) * dt.itemsize} bytes, {SHM_DIR} has "
                                            f"{free if free is not None else 'unknown'} free") from None
            raise
        self = cls.__new__(cls)
        self._init_core(m, name, dt, keys_t, str_keys, float(spin), float(liveness_interval))
        return self

    @classmethod
    def attach(cls, name: str, *, dtype: Any = None, spin: float = DEFAULT_SPIN,
               liveness_interval: float = _ring.DEFAULT_LIVENESS_INTERVAL, owner_only: bool = False,
               permissions: int | None = None) -> "Board":
        """Attach to an existing board; if ``dtype`` is given it must match the board's.
        ``liveness_interval``: how often a writer waiting for a key's claim checks that
        the holder is alive (a dead writer's claim is taken over within this bound).
        ``owner_only`` and ``permissions`` refuse a board of another user, or one more
        open than ``permissions``, as Ring.attach does; ``create(..., exist_ok=True)``
        applies both."""
        name = _check_name(name)
        want = _check_dtype(dtype) if dtype is not None else None
        m = _ring.BoardMapping.attach(name)
        _check_owner(name, m.file_owner, owner_only, permissions, "board")
        where = f"attach board {name!r}"
        info = m.info()
        stored = _decode_dtype(m.descr, where)
        if stored.itemsize != info["value_size"]:
            raise CorruptRingError(f"{where}: dtype size disagrees with the value size")
        if want is not None:
            if want != stored:
                raise TypeError(f"board {name!r} holds values of dtype {stored}, not {want}")
            stored = want
        str_keys = info["key_kind"] == 1
        keys = _decode_names(m.names, info["nkeys"], where) if str_keys else tuple(range(info["nkeys"]))
        self = cls.__new__(cls)
        self._init_core(m, name, stored, keys, str_keys, float(spin), float(liveness_interval))
        return self

    def unlink(self) -> None:
        """Remove the segment name; processes that have it mapped keep working."""
        _unlink(self.name)

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self):
        return (_attach_for_pickle, (self.name, _encode_dtype(self.dtype)))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} keys"
        return f"<shmring.Board {self.name!r} {self.dtype} {state}>"

    def watch(self, keys: Iterable[Any] | None = None, *, timeout: float | None = None
              ) -> Iterator[tuple[Any, Any, int]]:
        """Yield ``(key, value, version)`` whenever one of ``keys`` (default: all) is
        written after the iteration starts. Latest-value semantics: writes that come
        faster than the loop are coalesced (versions may skip). Sleeps without CPU;
        stops when nothing changed for ``timeout`` seconds (None: never)."""
        if timeout is not None and not (float(timeout) >= 0):
            raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
        keys = list(self) if keys is None else list(keys)
        if not keys:
            raise ValueError("watch() needs at least one key")
        idxs = [self._index_of(k) for k in keys]
        last = [self.version(k) for k in keys]
        wait = -1.0 if timeout is None else float(timeout)
        while True:
            if not self._wait_any(idxs, last, wait):
                return
            for j, k in enumerate(keys):
                if self.version(k) > last[j]:
                    value, ver = self.read(k, with_version=True)
                    last[j] = ver
                    yield k, value, ver

    async def await_change(self, key: Any, newer_than: int | None = None,
                           timeout: float | None = None) -> tuple[Any, int]:
        """Coroutine form of wait(): ``(value, version)`` once ``key`` has a version
        above ``newer_than`` (default: its version now), without blocking the event
        loop. At once, without touching the loop, when it has one already.
        TimeoutError on timeout; a cancelled await changes nothing."""
        from . import aio

        change = self.change(key, newer_than)
        if not await aio.wait_ready(change, timeout):
            raise TimeoutError(f"key {key!r} of board {self.name!r} was not written past version "
                               f"{change.newer_than} within {timeout} s")
        return self.read(key, with_version=True)

    def stats(self) -> dict:
        """Segment facts and, per key, version, last writer and claim holder."""
        m = self._m_or_raise()
        info = m.info()
        keys = []
        for i, k in enumerate(self._key_list()):
            ki = m.key_info(i)
            ki["key"] = k
            keys.append(ki)
        return {
            "name": self.name, "kind": "board", "dtype": str(self.dtype), "value_size": info["value_size"],
            "n_keys": info["nkeys"], "copies": info["copies"], "segment_size": info["segment_size"],
            "writes": sum(k["version"] for k in keys), "keys": keys, "creator_pid": info["creator_pid"],
            "created": info["create_time_ns"] / 1e9, "layout_version": info["layout_version"],
        }

    def _m_or_raise(self) -> _ring.BoardMapping:
        m = self._mapping()
        if m is None:
            raise ValueError(f"board {self.name!r} is closed")
        return m

    def _key_list(self) -> list:
        return self.keys


def _attach_for_pickle(name: str, descr: str) -> Board:
    return Board.attach(name, dtype=_decode_dtype(descr, "unpickle"))
