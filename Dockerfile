# syntax=docker/dockerfile:1
# Serving images: onnxruntime + tokenizers + FastAPI, no torch; the CPU image also carries
# OpenVINO, which serves bf16 bundle variants on CPUs with AMX or AVX-512-BF16.
#   docker build -t rewardserve:0.1.0-cpu .
#   docker build --build-arg VARIANT=gpu -t rewardserve:0.1.0-gpu .     # CUDA 12 + onnxruntime-gpu
# and, for the training Job in k8s/training (torch with CUDA; its command is torchrun):
#   docker build --build-arg VARIANT=train -t rewardserve:0.1.0-train .
# The bundle is mounted at /models/bundle at run time, or baked in with BUNDLE (a directory
# models/NAME/bundle: .dockerignore lets no other model files into the build context):
#   docker build --build-arg BUNDLE=models/default/bundle -t rewardserve:0.1.0-cpu .
#   docker run -p 8000:8000 -v $PWD/models/default/bundle:/models/bundle:ro rewardserve:0.1.0-cpu
# The install and start steps are docker/install.sh and docker/start.sh, which the tests run
# in a fresh virtual environment, so the recipe cannot rot unseen.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- the rewardserve wheel
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rewardserve ./rewardserve
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------- bases: a Python for each variant
FROM ${PYTHON_IMAGE} AS cpu-base

FROM ${CUDA_IMAGE} AS gpu-base
# Ubuntu 24.04's Python is 3.12. Versions are not pinned: the CUDA base tag fixes the release,
# and pinned Ubuntu package versions leave the archive with each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS train-base

# ---------------------------------------------------------------- the image (only the chosen base is built)
FROM ${VARIANT}-base
ARG VARIANT
ARG BUNDLE=docker/no-bundle
COPY docker/install.sh docker/start.sh /opt/rewardserve/
COPY --from=wheel /wheels /wheels
RUN PIP_NO_CACHE_DIR=1 /opt/rewardserve/install.sh /opt/rewardserve/venv /wheels/rewardserve-*.whl "${VARIANT}" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home rewardserve
COPY ${BUNDLE} /models/bundle
ENV PATH=/opt/rewardserve/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    REWARDSERVE_BUNDLE=/models/bundle \
    REWARDSERVE_HOST=0.0.0.0 \
    REWARDSERVE_PORT=8000
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# Exec form, and start.sh execs the server: SIGTERM reaches it, and it drains before it exits.
ENTRYPOINT ["/opt/rewardserve/start.sh"]
