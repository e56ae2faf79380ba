"""What every test folder and bench/ share, each concern in one module; import from here, never
from another folder's conftest.

- ports: a free loopback port, waiting for a listener
- processes: process groups killed by group id; the proxy CLI and the test upstream as processes
- proxies: in-process proxies and backends (fixtures `upstreams`, `make_proxy`, ...)
- upstream_app: the backend the proxy tests talk to (also run as a script)
- rawnet: raw-socket clients, a counting upstream, the proxy with short limits (fixture `proxy`)
- sshd: Debian's sshd with one config and a teardown that kills per-connection children
- sync_bed: two trees, one sshd, lsyncd between them (fixture `sync_bed`); dumont-provision runs
- waiting: poll a condition until a deadline
- codeserver, browser: real code-server processes; Debian's Chromium under Playwright
- workspaces: the CLI proxy serving [workspaces.NAME] tables, its control API, a per-Host load loop
"""
