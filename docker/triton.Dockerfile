# Triton for preftrack on a GPU host: NGC's image, plus TensorFlow for the python backend.
#
# NGC's tritonserver:<yy.mm>-py3 has no TensorFlow, and preftrack's model.py (copied into every version folder)
# imports it: the python backend runs it with this image's python3, so TensorFlow goes into that interpreter.
# The version must read the SavedModels the trainer writes (the trainer pins tensorflow-cpu 2.21.0).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
FROM ${TRITON_IMAGE}

RUN python3 -m pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0" "numpy<2"

# The model repository is a volume shared with the continual trainer (which writes new versions into it)
# and the gateway (which reads their metadata and asks Triton to load them).
VOLUME /models
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
            "--load-model=preftrack", "--model-config-name=gpu", "--strict-readiness=true", \
            "--allow-metrics=true", "--exit-timeout-secs=15"]
