"""Several processes on the public port: one controller, N data-plane workers (``workers = N``).

The controller owns everything that decides: the health checks, the failover machine, the hooks,
the control listener, and the pages app the workers hand /__dumont/ to. Each worker runs only the
data plane on the public port (``SO_REUSEPORT``: the kernel spreads connections over them) and
routes by the last decision the controller sent it; it sends back passive failures and, in
batches, what the metrics count. A decision reaches every worker as one message on a Unix socket
written in the same turn of the loop that made it, so no worker routes to a backend the controller
took out for longer than that message takes (milliseconds).

    channel.py     length-prefixed pickled frames over a socketpair
    decisions.py   what a decision carries, and the worker's Router built on the last one
    worker.py      a worker process (python -m proxy.workers.worker --fd N)
    pool.py        the controller's side: start, feed, replace a worker that died, stop them
"""
