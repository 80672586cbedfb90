# gptzoo's OpenAI-compatible server over the exported variants in /store (a volume). The image serves on
# onnxruntime and carries no torch (training and export stay on the host: `pip install 'gptzoo[train,export]'`).
#
#   docker build -t gptzoo:cpu .                               # onnxruntime (CPU), the default
#   docker build -t gptzoo:gpu --build-arg RUNTIME=gpu .       # onnxruntime-gpu + CUDA/cuDNN wheels instead
#   docker run -p 8000:8000 -v gptzoo-store:/store gptzoo:cpu [--workers 2 ...]   # extra args go to `gptzoo serve`
#
# PYTHON_IMAGE is any Debian-like image with Python >= 3.11 and its venv module as `python` (python:3.11-slim by
# default). Without Docker Hub, scripts/docker-base-image.sh makes one from debootstrap; build with
# `--network host --build-arg PYTHON_IMAGE=gptzoo-base:bookworm` (this is what tests/deploy/test_docker_image.py does).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG RUNTIME=cpu
# onnxruntime-gpu 1.31 on PyPI is built for CUDA 13 + cuDNN 9 (host driver >= 580); its extras pull those as wheels.
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY zoo zoo
COPY trainer trainer
COPY exports exports
COPY server server
COPY measure measure
COPY cli cli
# Exactly one onnxruntime: `cpu` and `gpu` are mutually exclusive extras (both installed hide the CUDA provider).
# The serving extras bring no torch; the last line fails the build if something pulled it in anyway. Versions come
# from the lock (constraints.txt), the ones the test suite passed on; onnxruntime-gpu is pinned by its ARG.
RUN case "$RUNTIME" in \
      cpu) pip install --no-cache-dir -c constraints.txt "./[serve,otel,cpu]" ;; \
      gpu) pip install --no-cache-dir -c constraints.txt "./[serve,otel,gpu]" "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" ;; \
      *) echo "RUNTIME must be cpu or gpu, not '$RUNTIME'" >&2; exit 1 ;; \
    esac \
 && python -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())" \
 && python -c "import importlib.util, sys; sys.exit('torch is in the serving image' if importlib.util.find_spec('torch') else 0)"

FROM ${PYTHON_IMAGE}
ARG RUNTIME=cpu
LABEL org.opencontainers.image.title="gptzoo" \
      org.opencontainers.image.description="OpenAI-compatible completions over a zoo of GPT models that differ by depth"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GPTZOO_HOME=/home/gptzoo/.gptzoo \
    GPTZOO_STORE=/store \
    GPTZOO_RUNTIME=${RUNTIME}
RUN groupadd --system --gid 10001 gptzoo \
 && useradd --system --uid 10001 --gid gptzoo --create-home --home-dir /home/gptzoo gptzoo \
 && mkdir /store \
 && chown gptzoo:gptzoo /store
COPY --from=build /opt/venv /opt/venv
# The gpu image's CUDA and cuDNN come as pip wheels (nvidia/*/lib); make them findable by the dynamic loader.
RUN for nvidia in /opt/venv/lib/python3*/site-packages/nvidia; do \
      if [ -d "$nvidia" ]; then find "$nvidia" -type d -name lib >> /etc/ld.so.conf.d/gptzoo-nvidia.conf; fi; \
    done \
 && if [ -f /etc/ld.so.conf.d/gptzoo-nvidia.conf ]; then ldconfig; fi
USER 10001:10001
WORKDIR /home/gptzoo
VOLUME ["/store"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["gptzoo", "serve", "--host", "0.0.0.0"]
