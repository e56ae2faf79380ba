# Dumont failover proxy: one URL in front of a GPU code-server and its CPU standby (docs/DEPLOY.md).
#
#   docker build -t dumont-proxy .
#   docker run -p 8888:8888 -e DUMONT_PRIMARY=http://gpu:8080 -e DUMONT_STANDBY=http://cpu:8080 dumont-proxy
#
# Two stages: `build` makes a virtual environment in /opt/dumont (pip, setuptools and any compiler
# stay there); the final stage copies only that venv onto a fresh copy of the same base, runs as an
# unprivileged user and is configured by DUMONT_* environment variables and/or a TOML file mounted at
# /etc/dumont/dumont.toml (point DUMONT_CONFIG at it).
#
# BASE_IMAGE is any image with python3 >= 3.11 and its venv module, the same in both stages (the
# venv's interpreter is a link to the base's python3). The default is the official slim image; the
# test on machines without registry access passes a locally bootstrapped Debian 12 instead
# (scripts/make-base-image.sh).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# pip's own settings, for builds behind a mirror or a TLS-intercepting proxy. Build arguments of
# this stage never reach the final image (its history starts from BASE_IMAGE again).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG PIP_CONSTRAINT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The context is what .dockerignore lets through: pyproject.toml, README.md (pyproject names it as
# the long description), the two packages, templates/ and static/.
COPY . .
# The wheel declares the provisioning CLI's dependencies too (the Google Cloud SDK, zstandard: over
# 100 MB); the proxy needs none of them. Install the package without dependencies, then every
# declared dependency except those named in SKIP_DEPS, then import every module of `proxy`, so that a
# dependency the proxy does need can never be skipped silently: the build fails instead.
ARG SKIP_DEPS="google-cloud-compute zstandard"
# The data plane compiled with mypyc, as `make` does in a checkout (docs/ARCHITECTURE.md,
# "Compiled"): about a fifth less CPU per request. The compiler, the headers and mypy stay in this
# stage; only the extension modules and their manifest reach the venv. DATAPLANE=sources skips it.
ARG DATAPLANE=compiled
RUN python3 -m venv /opt/dumont \
 && /opt/dumont/bin/pip install --no-warn-script-location --no-deps . \
 && /opt/dumont/bin/python -c "import importlib.metadata as m, re, sys; skip = set(sys.argv[1:]); print(*(r for r in m.requires('dumont') or () if 'extra ==' not in r and re.split(r'[\s;<>=!~\[(]', r, maxsplit=1)[0].lower() not in skip), sep='\n')" $SKIP_DEPS > /tmp/proxy-requirements.txt \
 && /opt/dumont/bin/pip install --no-warn-script-location -r /tmp/proxy-requirements.txt \
 && if [ "$DATAPLANE" = compiled ]; then \
      packages="gcc libc6-dev" \
      && { [ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || packages="$packages python3-dev"; } \
      && apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null \
      && /opt/dumont/bin/pip install --no-warn-script-location -q mypy \
      && /opt/dumont/bin/python scripts/compile_dataplane.py \
      && site="$(/opt/dumont/bin/python -I -c 'import os, proxy; print(os.path.dirname(proxy.__file__))')" \
      && cp proxy/dataplane/*.so proxy/dataplane/compiled.json "$site/dataplane/" \
      && /opt/dumont/bin/pip uninstall --yes -q mypy mypy_extensions pathspec librt ast-serialize \
      && /opt/dumont/bin/python -I -c "import proxy.dataplane, proxy.compiled as c; b = c.BUILDS['proxy.dataplane']; assert b.compiled, b.describe()"; \
    fi \
 && /opt/dumont/bin/python -c "import importlib, pkgutil, proxy; [importlib.import_module(m.name) for m in pkgutil.walk_packages(proxy.__path__, 'proxy.') if not m.name.endswith('__main__')]" \
 && /opt/dumont/bin/dumont-proxy --help >/dev/null \
 && /opt/dumont/bin/pip uninstall --yes pip setuptools \
 && mkdir -p templates static

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=dev
ARG REVISION=
ARG CREATED=
ARG SOURCE=
LABEL org.opencontainers.image.title="dumont-proxy" \
      org.opencontainers.image.description="Failover reverse proxy for a browser IDE: one URL in front of a GPU code-server and its CPU standby" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# A fixed numeric id, so that orchestrators can check runAsNonRoot and volumes can be chowned ahead.
RUN useradd --no-log-init --uid 10001 --user-group --home-dir /var/lib/dumont --create-home \
      --shell /usr/sbin/nologin dumont \
 && mkdir -p /etc/dumont
COPY --from=build /opt/dumont /opt/dumont
COPY --from=build /src/templates/ /usr/share/dumont/templates/
COPY --from=build /src/static/ /usr/share/dumont/static/
# No DUMONT_LISTEN here: the environment outranks the TOML file, so setting it would make a
# `listen` in a mounted file ineffective. The proxy's default is 0.0.0.0:8888.
ENV PATH=/opt/dumont/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DUMONT_ASSETS_DIR=/usr/share/dumont
USER 10001:10001
WORKDIR /var/lib/dumont
EXPOSE 8888
# The proxy's own liveness on its public port: DUMONT_LISTEN, else `listen` in the DUMONT_CONFIG
# file, else 0.0.0.0:8888, the same precedence as the proxy's (a wildcard host is asked on loopback).
# Python, because slim bases have neither curl nor wget. Docker-format images only: build with
# `buildah bud --format docker` (an OCI image config has no field for a health check).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, tomllib, urllib.request as r; c = os.environ.get('DUMONT_CONFIG'); h, _, p = (os.environ.get('DUMONT_LISTEN') or (c and tomllib.load(open(c, 'rb')).get('listen')) or '0.0.0.0:8888').rpartition(':'); h = h.strip('[]'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h = f'[{h}]' if ':' in h else h; r.urlopen(f'http://{h}:{p}/__dumont/healthz', timeout=2)"]
ENTRYPOINT ["/opt/dumont/bin/dumont-proxy"]
CMD []
