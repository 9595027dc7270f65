# syntax=docker/dockerfile:1
# The vLLM Router (PyPI vllm-router: a Rust binary in a wheel), for k8s/overlays/router:
#   docker build -f docker/vllm-router.Dockerfile -t registry.example.com/vllm-router:0.1.17 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG VLLM_ROUTER_VERSION=0.1.17
RUN pip install --no-cache-dir "vllm-router==${VLLM_ROUTER_VERSION}" \
    && useradd --system --uid 10001 --no-create-home router
USER 10001
EXPOSE 30000 29000
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:30000/liveness', timeout=2)"]
ENTRYPOINT ["vllm-router"]
