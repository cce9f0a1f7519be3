"""Imports run one way: cli/app -> adapters -> services -> store -> core; leaf modules import
nothing from mailgate; adapters never import each other; core touches no I/O libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "mailgate"
LEAVES = {"config", "errors", "clock", "logs", "metrics", "keys", "frames", "supervise",
          "gctune"}
RANK = {"core": 0, "store": 1, "services": 2, "adapters": 3, "app": 4, "cli": 4, "wiring": 4,
        "cli_warm": 4, "cli_warm_server": 4,
        "deliver": 4, "cli_articles": 4, "cli_oauth": 4, "__main__": 5}
IO_LIBS = {"sqlalchemy", "sqlmodel", "aiosmtpd", "imapclient", "starlette", "uvicorn", "socket",
           "asyncio", "smtplib", "os", "subprocess", "httpx", "prometheus_client"}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "migrations" not in p.parts)


def _layer(rel: tuple[str, ...]) -> str:
    head = rel[0].removesuffix(".py")
    return head


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    rel = path.relative_to(PKG).parts
    layer = _layer(rel)
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "mailgate":
            if layer == "core":
                assert parts[0] not in IO_LIBS, f"core module imports I/O library {name}"
            continue
        if len(parts) == 1:
            continue
        target = parts[1]
        if layer in LEAVES:
            # errors.py is the root of the tree: a leaf may raise its exceptions.
            assert target == "errors" and layer != "errors", f"leaf {path.name} imports {name}"
            continue
        if target in LEAVES:
            continue
        assert RANK.get(target, 99) <= RANK.get(layer, -1), f"{'/'.join(rel)} imports {name}"
        if layer == "adapters" and target == "adapters" and len(rel) > 1 and len(parts) > 2:
            mine = rel[1].removesuffix(".py")
            assert parts[2] == mine, f"adapter {mine} imports adapter {parts[2]}"
