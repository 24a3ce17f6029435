# Triton for preftrack on a GPU host: NGC's image, plus TensorFlow for the python backend.
#
# NGC's tritonserver:<yy.mm>-py3 has no TensorFlow, and preftrack's model.py (copied into every version folder)
# imports it: the python backend runs it with this image's python3, so TensorFlow goes into that interpreter.
# The version must read the SavedModels the trainer writes (the trainer pins tensorflow-cpu 2.21.0).
#
# `make compose-check` resolves the pip install below for this image's Python (docker/check_images.py reads the
# install-check line): 25.01 is Ubuntu 24.04, Python 3.12, glibc 2.39. Another TRITON_IMAGE needs its own line.
# install-check: python=3.12 glibc=2.39 externally-managed
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
FROM ${TRITON_IMAGE}

# PEP 668: Ubuntu 24.04's Python is marked externally managed, and pip refuses a root install into it unless told.
# We tell it: the image does one thing, and the python backend's stub embeds this interpreter, so TensorFlow must
# be importable by it. A separate environment would have to be packed and named in every version's config.pbtxt
# (EXECUTION_ENV_PATH, written by the trainer) for no gain. NVIDIA's build script (r25.01) sets
# PIP_BREAK_SYSTEM_PACKAGES=1 in the image; the flag does not rely on that. pip writes to
# /usr/local/lib/python3.12/dist-packages and cannot upgrade a package apt installed ("installed by debian"): a dry
# run does not see the image's packages, so only a build would show that.
# numpy<2 as the image's python backend and the trainer have it; TensorFlow 2.21 needs >= 1.26.0 (1.26.4: cp312).
RUN python3 -m pip install --no-cache-dir --break-system-packages "tensorflow[and-cuda]==2.21.0" "numpy<2"

# The model repository is a volume shared with the continual trainer (which writes new versions into it)
# and the gateway (which reads their metadata and asks Triton to load them). Owned by the trainer's user (uid
# 10001, docker/trainer.Dockerfile), whichever image's copy initialises the empty volume.
RUN mkdir -p /models && chown 10001 /models
VOLUME /models
EXPOSE 8000 8001 8002
# A new deployment's repository is empty until the trainer writes version 1: with --exit-on-error=false Triton
# keeps running when the model is not there yet (or cannot load), and the gateways ask it to load the versions
# they serve (explicit mode) once there are some. NVIDIA's entrypoint script first sets up the CUDA driver
# compatibility the image needs.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "tritonserver", "--model-repository=/models", \
            "--model-control-mode=explicit", "--load-model=preftrack", "--exit-on-error=false", \
            "--model-config-name=gpu", "--strict-readiness=true", "--allow-metrics=true", \
            "--exit-timeout-secs=15"]
