"""The implementations compared: one module per peer, each binding a `harness.peer.Peer`
subclass instance to the name `PEER`. Every module in this package is discovered, so adding a
peer means adding one file."""

from __future__ import annotations

import importlib
import pkgutil

_REGISTRY: dict | None = None


def registry() -> dict:
    """name -> Peer, in report order."""
    global _REGISTRY
    if _REGISTRY is None:
        found = []
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"{__name__}.{info.name}")
            peer = getattr(mod, "PEER", None)
            if peer is None:
                raise ImportError(f"peers/{info.name}.py defines no PEER")
            found.append(peer)
        found.sort(key=lambda p: (p.order, p.name))
        names = [p.name for p in found]
        if len(set(names)) != len(names):
            raise ImportError(f"two peers share a name: {names}")
        _REGISTRY = {p.name: p for p in found}
    return _REGISTRY


def get(name: str):
    return registry()[name]


def names() -> list[str]:
    return list(registry())
