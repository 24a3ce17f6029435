"""Triton python-backend model: serves one preftrack SavedModel version with batched calls.

The trainer copies this file into every version folder next to ``model.savedmodel/``. Tensor names and
types come from the model's ``config.pbtxt``; the SavedModel's signature takes the same inputs in lower case
(``USER_ID`` → ``user_id``). All requests of one ``execute`` are checked, the good ones concatenated into one
batch and scored with a single call; a bad request gets its own error and never fails the others.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One loaded SavedModel version."""

    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        saved = os.path.join(version_dir, "model.savedmodel")
        if not any(os.path.isfile(os.path.join(saved, name)) for name in ("saved_model.pb", "saved_model.pbtxt")):
            # Refused before TensorFlow is imported (seconds per attempt): a version whose files are gone fails at
            # once, and whoever asked for the load moves on sooner.
            raise FileNotFoundError(f"{saved} holds no saved_model.pb: this version's files are missing or incomplete")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value") or os.environ.get(
            "PREFTRACK_TF_INTRA_OP_THREADS"
        )
        if threads:
            # On a few shared cores, fewer TensorFlow threads per instance can beat oversubscription.
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        # Each instance is its own process. On a GPU instance (KIND_GPU) it runs on the GPU Triton assigned it
        # and takes memory as it needs it: two loaded versions (stable and candidate) share a GPU instead of
        # each reserving all of its memory. Elsewhere (KIND_CPU, or no GPU visible) it runs on the CPU.
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        on_gpu = args.get("model_instance_kind") == "GPU" and gpus
        self._device = f"/GPU:{int(args.get('model_instance_device_id', 0))}" if on_gpu else "/CPU:0"
        with tf.device(self._device):
            self._signature = tf.saved_model.load(saved).signatures["serving_default"]
        self._tf = tf
        self._inputs = [
            (spec["name"], pb_utils.triton_string_to_numpy(spec["data_type"]), [int(d) for d in spec["dims"]])
            for spec in config["input"]
        ]
        output = config["output"][0]
        self._output_name = output["name"]
        self._output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])
        expected = {name.lower() for name, _, _ in self._inputs}
        declared = set(self._signature.structured_input_signature[1])
        if expected != declared:
            raise ValueError(f"config inputs {sorted(expected)} do not match the SavedModel's {sorted(declared)}")

    def _read(self, request):
        """The request's inputs as arrays with the batch dimension first, plus its row count."""
        arrays = []
        rows = None
        for name, dtype, dims in self._inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise ValueError(f"input {name} must be {np.dtype(dtype).name}, got {array.dtype.name}")
            if list(array.shape[1:]) != dims:
                raise ValueError(f"input {name} must have shape [batch, {', '.join(map(str, dims))}]")
            if rows is None:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise ValueError(f"input {name} has {array.shape[0]} rows, expected {rows} like the others")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ValueError(f"input {name} contains NaN or infinity")
            arrays.append(array)
        return arrays, rows or 0

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        columns = [[] for _ in self._inputs]
        for index, request in enumerate(requests):
            try:
                arrays, rows = self._read(request)
            except ValueError as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            good.append((index, rows))
            for column, array in zip(columns, arrays, strict=False):
                column.append(array)
        if good:
            try:
                feeds = {}
                with self._tf.device(self._device):
                    for (name, _, dims), column in zip(self._inputs, columns, strict=False):
                        batch = np.concatenate(column) if len(column) > 1 else column[0]
                        # Scalar-per-row inputs are declared [1] for Triton and [None] in the signature.
                        feeds[name.lower()] = self._tf.constant(batch.reshape(-1) if dims == [1] else batch)
                    outputs = self._signature(**feeds)
                scores = next(iter(outputs.values())).numpy().astype(self._output_dtype)
                scores = scores.reshape(-1, 1)
                start = 0
                for index, rows in good:
                    out = pb_utils.Tensor(self._output_name, scores[start : start + rows])
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[out])
                    start += rows
            except Exception as exc:
                for index, _ in good:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"scoring failed: {type(exc).__name__}: {exc}")
                    )
        return responses

    def finalize(self):
        self._signature = None
