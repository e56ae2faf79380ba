"""The data plane: the proxy's own HTTP/1.1 on asyncio Protocols over uvloop, parsed by llhttp.

    listener.py    a listening socket: its limits, its connections, a graceful end
    connection.py  one browser connection: parsing, limits, timers, pipelining, flow control
    handlers.py    what a listener does with a request: forward it, splice it, or hand it to a
                   local aiohttp app (the pages under /__dumont/, the control API)
    exchange.py    one HTTP request's way to a backend and back, with retries and re-framing
    websocket.py   the 101 handshake, then a byte splice flow-controlled by the transports
    upstream.py    connections to a backend and their keep-alive pool; cheap health probes
    router.py      the seam to whatever decides where traffic goes (proxy.workspace today)
    messages.py    request heads and serialisation

It only routes by the latest decision and reports passive failures; everything that decides lives
in the control plane (proxy.workspace, proxy.failover, proxy.health).
"""

from proxy.compiled import choose_build

# Before any module of this package is imported: the compiled build only if it is current.
choose_build(__name__, __path__[0])
