# The continual trainer: learns from the event store and writes new versions into the shared model repository.
# It trains on the CPU (small incremental rounds); EXTRA=gpu installs TensorFlow with CUDA instead.
# `make compose-check` resolves the pip install below for this Python, with each EXTRA (docker/check_images.py
# reads the next line; the base is as in docker/gateway.Dockerfile).
# install-check: python=3.11 glibc=2.36 EXTRA=cpu,gpu
FROM python:3.11-slim
ARG EXTRA=cpu

WORKDIR /src
COPY sdk /src/sdk
COPY gateway /src/gateway
COPY trainer /src/trainer
RUN pip install --no-cache-dir /src/sdk /src/gateway "/src/trainer[${EXTRA}]" \
    && useradd --system --uid 10001 preftrack \
    && mkdir -p /models && chown preftrack /models

USER preftrack
ENTRYPOINT ["preftrack-trainer"]
CMD ["continual", "--repository", "/models"]
