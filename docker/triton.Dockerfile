# Triton for preftrack on a GPU host: NGC's image, plus TensorFlow for the python backend.
#
# NGC's tritonserver:<yy.mm>-py3 has no TensorFlow, and preftrack's model.py (copied into every version folder)
# imports it: the python backend runs it with this image's python3, so TensorFlow goes into that interpreter.
# The version must read the SavedModels the trainer writes (the trainer pins tensorflow-cpu 2.21.0).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
FROM ${TRITON_IMAGE}

RUN python3 -m pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0" "numpy<2"

# The model repository is a volume shared with the continual trainer (which writes new versions into it)
# and the gateway (which reads their metadata and asks Triton to load them). Owned by the trainer's user (uid
# 10001, docker/trainer.Dockerfile), whichever image's copy initialises the empty volume.
RUN mkdir -p /models && chown 10001 /models
VOLUME /models
EXPOSE 8000 8001 8002
# No --load-model: a new deployment's repository is empty until the trainer writes version 1, and Triton would
# exit on a model it cannot find. The gateways ask Triton to load each version they serve (explicit mode).
ENTRYPOINT ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
            "--model-config-name=gpu", "--strict-readiness=true", "--allow-metrics=true", \
            "--exit-timeout-secs=15"]
