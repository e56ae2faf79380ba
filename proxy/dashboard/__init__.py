"""Observability on the control listener: Prometheus metrics, the dashboard, the sync report.

``setup_observability`` is the one call ``make_control_app`` makes: it builds the ``Board`` for the
workspace, installs the metrics as the workspace's traffic observer (unless ``metrics = false``),
subscribes the board to the workspace's events, and adds the routes (proxy.dashboard.routes).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.metrics import ProxyMetrics
from proxy.workspace import Workspace

from .board import Board
from .routes import BOARD, TokenCheck, add_routes

__all__ = ["BOARD", "Board", "setup_observability"]


def _loop_time() -> float:
    # The workspace's clock: switch records carry times from it.
    return asyncio.get_running_loop().time()


def setup_observability(
    app: web.Application, workspace: Workspace, require_token: TokenCheck
) -> Board:
    board = Board(workspace)
    if workspace.config.metrics:
        board.metrics = ProxyMetrics(workspace, board.sync, board.tip_counts, now=_loop_time)
        workspace.traffic = board.metrics
        workspace.observers.append(board.metrics.observe)
    workspace.observers += [board.observe, board.ledger.observe]
    add_routes(app, board, require_token)
    return board
