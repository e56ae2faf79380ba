"""Fixtures shared by the deploy tests: the locally bootstrapped base image, test backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.buildah import BASE_IMAGE_SCRIPT, image_exists, run
from tests.support.processes import Proc, start_upstream


@pytest.fixture(scope="session")
def base_image() -> Iterator[str]:
    """The local Debian base; removed afterwards if this session imported it (the tarball stays)."""
    name = run(["bash", str(BASE_IMAGE_SCRIPT), "--print-name"]).strip()
    existed = image_exists(name)
    made = run(["bash", str(BASE_IMAGE_SCRIPT)], timeout=600).strip().splitlines()[-1]
    assert made == name
    yield name
    if not existed:
        run(["buildah", "rmi", name], check=False)


@pytest.fixture
def backends() -> Iterator[tuple[Proc, Proc]]:
    """Two backends on loopback answering /healthz and echoing their name: "gpu" and "cpu"."""
    gpu = start_upstream("gpu")
    try:
        cpu = start_upstream("cpu")
    except BaseException:
        gpu.stop()
        raise
    try:
        yield gpu, cpu
    finally:
        gpu.stop()
        cpu.stop()
