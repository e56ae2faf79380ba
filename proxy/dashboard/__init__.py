"""Observability on the control listener: Prometheus metrics, the dashboard, the sync report.

``build_board`` makes the ``Board`` for a workspace, with its metrics unless ``metrics = false``;
the composition root (proxy.server) subscribes ``Board.observers()`` to the workspace and hands the
metrics to the data plane as its traffic observer. ``add_routes`` (proxy.dashboard.routes) puts
the boards on the control app: each workspace's page, and the overview of every workspace
(proxy.dashboard.overview, issue 15).
"""

from __future__ import annotations

import asyncio

from proxy.metrics import ProxyMetrics
from proxy.observe import TipSource
from proxy.park_status import ParkCollector
from proxy.workspace import Workspace

from .board import Board
from .routes import ADMIN_EMAIL, BOARDS, CSRF_TOKEN, BoardSource, TokenCheck, add_routes

__all__ = [
    "ADMIN_EMAIL",
    "BOARDS",
    "CSRF_TOKEN",
    "Board",
    "BoardSource",
    "TokenCheck",
    "add_routes",
    "build_board",
]


def _loop_time() -> float:
    # The workspace's clock: switch records carry times from it.
    return asyncio.get_running_loop().time()


def build_board(workspace: Workspace, tips: TipSource | None) -> Board:
    board = Board(workspace, tips)
    if workspace.config.metrics:
        board.metrics = ProxyMetrics(workspace, board.sync, board.tip_counts, now=_loop_time)
        board.metrics.registry.register(ParkCollector(board.park))  # issue 18's park metrics
    return board
