# The continual trainer: learns from the event store and writes new versions into the shared model repository.
# It trains on the CPU (small incremental rounds); EXTRA=gpu installs TensorFlow with CUDA instead.
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
