"""The control API's cluster routes, and the forwarding of commands to the leader.

- ``GET /admin/cluster``: this replica, who leads, contact, store-lost state, the peers, each
  replica's view and the decisions (``dumont-proxy status`` and the dashboard read it).
- ``GET /admin/cluster/contact``: whether this replica reaches the store; what a peer out of
  contact asks (proxy.cluster.failsafe).
- A command (any POST under /admin) sent to a replica that does not lead is forwarded to the
  leader's control listener, whose machines decide and whose hooks run; the answer comes back as
  the leader gave it. An operator, provisioning or an admin's dashboard (sign-in's admin pages,
  mounted under a root of their own) can use whichever replica they reach. The request is checked
  here by the app's own access check (bearer token, or admin session and CSRF token) and carried
  to the leader with this replica's admin token, which every replica shares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import hdrs, web

from proxy.control_app import ACCESS
from proxy.errors import StoreUnavailable

from .member import ClusterMember

__all__ = ["add_cluster_routes"]

MEMBER = web.AppKey("cluster_member", ClusterMember)
FORWARD_TIMEOUT = 30.0  # a switchover's flush runs inside the leader's answer
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_cluster_routes(app: web.Application, member: ClusterMember, root: str = "") -> None:
    """``root``: where ``app`` is mounted (sign-in's admin pages), "" on the control listener."""
    app[MEMBER] = member

    def check(request: web.Request) -> None:
        request.app[ACCESS](request)

    async def status(request: web.Request) -> web.Response:
        check(request)
        return web.json_response(member.status())

    async def contact(request: web.Request) -> web.Response:
        check(request)
        age = member.presence.contact_age()
        return web.json_response(
            {
                "replica": member.replica,
                "in_contact": member.presence.in_contact(),
                # JSON has no infinity: null before the first contact.
                "contact_age": None if age == float("inf") else round(age, 3),
            }
        )

    @web.middleware
    async def forward_commands(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path.removeprefix(root)
        if (
            request.method != hdrs.METH_POST
            or not path.startswith("/admin/")
            or member.leadership.leading() is not None
        ):
            return await handler(request)
        check(request)
        query = f"?{request.query_string}" if request.query_string else ""
        return await _forward(request, member, path + query)

    app.router.add_get("/admin/cluster", status)
    app.router.add_get("/admin/cluster/contact", contact)
    app.middlewares.append(forward_commands)


async def _forward(request: web.Request, member: ClusterMember, path_qs: str) -> web.Response:
    leader = member.leader
    control = None if leader is None else member.peers.get(leader)
    if control is None:
        raise StoreUnavailable("no leader is known to this replica; retry shortly")
    headers = {hdrs.CONTENT_TYPE: request.headers.get(hdrs.CONTENT_TYPE, "application/json")}
    if member.config.admin_token:
        headers[hdrs.AUTHORIZATION] = f"Bearer {member.config.admin_token}"
    body = await request.read()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                control + path_qs,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
            ) as answer,
        ):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                content_type=answer.content_type,
                headers={"X-Dumont-Leader": leader or ""},
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"the leader ({leader}) did not answer: {exc}") from None
