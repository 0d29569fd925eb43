# syntax=docker/dockerfile:1
#
# Chaperon image: one image for the master and the workers.
#
#   docker build -t chaperon:latest .
#   docker run --rm chaperon:latest --help
#   docker run -p 50051:50051 chaperon:latest master --host 0.0.0.0 --db /data/chaperon.db
#
# Both stages use the same Debian release (bookworm) on purpose: the _fastpath TLS extension is
# compiled against the build stage's OpenSSL and must find the same soname (libssl.so.3, package
# libssl3) at run time. On trixie the runtime package is named libssl3t64.
#
# No HEALTHCHECK: a gRPC health check needs a client and the port differs between the master
# (50051) and a worker (50052). Kubernetes ignores HEALTHCHECK anyway and uses the built-in grpc
# probes of deploy/k8s; with plain Docker see docs/cluster.md for a one-line check.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# DL3008 (pin apt package versions): the versions follow the base image's Debian point release;
# pinning them would break the build at every security update of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads: setup.py generates the gRPC stubs from protos/ and cythonizes
# _fastpath/ (linking libssl/libcrypto); generated files are kept out by .dockerignore.
COPY pyproject.toml setup.py README.md ./
COPY protos/ protos/
COPY _fastpath/ _fastpath/
COPY chaperon/ chaperon/
COPY master_service/ master_service/
COPY worker_service/ worker_service/

# The project's wheel and a wheel of every runtime dependency, so the runtime stage installs
# offline and needs no compiler.
RUN pip wheel --no-cache-dir . -w /wheels

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Runtime libraries only: the TLS layer of _fastpath links libssl.so.3 / libcrypto.so.3.
# DL3008: see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 \
    && rm -rf /var/lib/apt/lists/*

# Install from the build stage's wheels without copying them into a layer of this image.
# DL3013 (pin pip versions): every package comes from /wheels, built in the same build with
# pip's own resolution, and --no-index forbids anything else.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels chaperon \
    && chaperon --version

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and a volume can be
# given to it with fsGroup. /data holds the master's SQLite file (--db /data/chaperon.db).
RUN groupadd --system --gid 10001 chaperon \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin chaperon \
    && mkdir -p /data \
    && chown 10001:10001 /data
WORKDIR /data
USER 10001:10001

# 50051: the master's gRPC port; 50052: a worker's gRPC port (both also serve health and
# reflection).
EXPOSE 50051 50052

ENTRYPOINT ["chaperon"]
CMD ["--help"]
