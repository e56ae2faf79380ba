"""Shared machinery of the benchmark scripts: processes, upstreams, peer proxies, reports.

The scripts in bench/ run as files (``python bench/throughput.py``), so this package is imported
as ``peers`` with bench/ on ``sys.path``. Every process it starts runs on 127.0.0.1 with an
ephemeral port, in its own process group, and is stopped by process-group id.

Ports and process-group signals come from tests/support, the one support layer of the tests and
the benchmarks: the repository goes on ``sys.path`` here for that.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
