# syntax=docker/dockerfile:1
#
# The AuroraQ image: one `auroraq` binary that runs any role (the command is the container's
# arguments: `docker run IMAGE score`, `... connect binance`, `... sink postgres`).
#
#   docker build -t auroraq:0.1.0 .                                   # CPU image (the default target)
#   docker build --target runtime-cuda -t auroraq:0.1.0-cuda .       # CUDA image for `score --device cuda`
#
# Needs BuildKit (the default builder of Docker 23+) for the cache mounts and COPY --chmod.
# Base images are pinned by tag; pin them by digest too (`image:tag@sha256:...`) where your
# registry policy asks for it. scripts/deploy-check.sh lints this file with hadolint.

# ---- toolchain: Rust (>= 1.92, which the locked `ort` crate needs) and python3-pip for
# scripts/onnxruntime.sh, which takes ONNX Runtime's library from the PyPI wheel.
FROM rust:1.95.0-bookworm AS toolchain
# cmake: the Kafka bus builds librdkafka from its bundled sources.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# ---- build: the CPU binary and ONNX Runtime's CPU library.
FROM toolchain AS build
# ONNX Runtime first, from the script alone, so a source change does not fetch it again.
COPY scripts/onnxruntime.sh scripts/onnxruntime.sh
RUN scripts/onnxruntime.sh
COPY . .
RUN --mount=type=cache,id=auroraq-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=auroraq-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=auroraq-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p auroraq \
 && install -D -m 0755 target/release/auroraq /out/auroraq

# ---- build-cuda: the same with the CUDA execution provider and onnxruntime-gpu's libraries.
FROM toolchain AS build-cuda
COPY scripts/onnxruntime.sh scripts/onnxruntime.sh
RUN AURORAQ_ORT_PACKAGE=onnxruntime-gpu scripts/onnxruntime.sh
COPY . .
RUN --mount=type=cache,id=auroraq-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=auroraq-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=auroraq-target-cuda,target=/src/target,sharing=locked \
    cargo build --release --locked -p auroraq --features cuda \
 && install -D -m 0755 target/release/auroraq /out/auroraq

# ---- runtime-cuda: CUDA 13 and cuDNN 9 (what onnxruntime-gpu 1.31 is built against) on Ubuntu
# 24.04 (glibc 2.39, newer than the build's bookworm 2.36). The node needs NVIDIA's driver (580 or
# later for CUDA 13) and the NVIDIA container toolkit or Kubernetes device plugin.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS runtime-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 auroraq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin auroraq
COPY --from=build-cuda /out/auroraq /usr/local/bin/auroraq
COPY --from=build-cuda /src/.auroraq/onnxruntime/ /opt/auroraq/lib/onnxruntime/
COPY models/ /opt/auroraq/models/
COPY data/market/ /opt/auroraq/data/market/
COPY data/news/ /opt/auroraq/data/news/
COPY --chmod=0755 deploy/docker/auroraq-probe /usr/local/bin/auroraq-probe
ENV AURORAQ_SENTIMENT_ORT_DYLIB=/opt/auroraq/lib/onnxruntime/libonnxruntime.so \
    AURORAQ_SENTIMENT_MODEL_DIR=/opt/auroraq/models/auroraq-minilm-fpb \
    AURORAQ_SENTIMENT_DEVICE=cuda
WORKDIR /opt/auroraq
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["auroraq-probe", "/health"]
ENTRYPOINT ["auroraq"]
CMD ["--help"]

# ---- runtime (the default target): Debian slim, a non-root user with a fixed UID, CA
# certificates (TLS to Binance and Feedly through rustls' native roots), the binary, ONNX
# Runtime's library, the default sentiment model and the seed-rule policy, and the bundled data
# so that `auroraq run --out /tmp/out` works in the container. libstdc++, which ONNX Runtime
# needs, is already in the slim image (apt depends on it).
FROM debian:12.11-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 auroraq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin auroraq
COPY --from=build /out/auroraq /usr/local/bin/auroraq
COPY --from=build /src/.auroraq/onnxruntime/ /opt/auroraq/lib/onnxruntime/
COPY models/ /opt/auroraq/models/
COPY data/market/ /opt/auroraq/data/market/
COPY data/news/ /opt/auroraq/data/news/
COPY --chmod=0755 deploy/docker/auroraq-probe /usr/local/bin/auroraq-probe
# [sentiment] ort_dylib and model_dir, as AURORAQ_<SECTION>_<KEY>. The metrics address
# (AURORAQ_METRICS_LISTEN=0.0.0.0:9464) is set per role by compose.yaml and k8s/, not here:
# `auroraq run --bus ...` starts one process per role in one container, and they cannot all bind it.
ENV AURORAQ_SENTIMENT_ORT_DYLIB=/opt/auroraq/lib/onnxruntime/libonnxruntime.so \
    AURORAQ_SENTIMENT_MODEL_DIR=/opt/auroraq/models/auroraq-minilm-fpb
# Read-only for the user: roles write nothing locally (state is on the bus, in PostgreSQL and
# Redis); one-shot jobs take --out /tmp/... (an emptyDir on Kubernetes).
WORKDIR /opt/auroraq
USER 10001:10001
# /metrics, /health, /ready of the role (AURORAQ_METRICS_LISTEN).
EXPOSE 9464
# bash's /dev/tcp, no HTTP client in the image: see deploy/docker/auroraq-probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["auroraq-probe", "/health"]
ENTRYPOINT ["auroraq"]
CMD ["--help"]
