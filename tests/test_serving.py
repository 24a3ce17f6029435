"""The exported model served by a real Triton: same scores as in-process, batching, per-request errors,
and a corrupt version that never disturbs the serving one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway import contract
from preftrack_trainer import export

from .conftest import Trained, triton_inputs

pytestmark = pytest.mark.e2e


def _infer(url: str, inputs, version: str = "") -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer(contract.MODEL_NAME, inputs, model_version=version)
        return result.as_numpy(contract.SCORE).reshape(-1)
    finally:
        client.close()


def test_triton_scores_equal_in_process_savedmodel(trained: Trained, triton: TritonServer) -> None:
    rows = slice(0, 512)
    served = _infer(triton.grpc_url, triton_inputs(trained.test, rows), version="1")
    signature = tf.saved_model.load(
        str(trained.repository / contract.MODEL_NAME / "1" / export.SAVEDMODEL_DIR)
    ).signatures["serving_default"]
    local = (
        signature(
            user_id=tf.constant(trained.test.user_id[rows]),
            item_id=tf.constant(trained.test.item_id[rows]),
            category_id=tf.constant(trained.test.category_id[rows]),
            features=tf.constant(trained.test.features[rows]),
            attributes=tf.constant(trained.test.attributes[rows]),
        )["score"]
        .numpy()
        .reshape(-1)
    )
    assert served.shape == (512,)
    np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-6)
    assert served.min() >= 0.0 and served.max() <= 1.0
    # Not a constant model: the scores actually depend on the inputs.
    assert served.std() > 0.01


def _stats(client: grpcclient.InferenceServerClient) -> tuple[int, int]:
    stats = client.get_inference_statistics(contract.MODEL_NAME, "1", as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_dynamic_batching_merges_concurrent_single_row_requests(trained: Trained, triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inferences_before, executions_before = _stats(client)
    per_client = 40

    def worker(offset: int) -> int:
        own = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            for k in range(per_client):
                row = np.array([(offset * per_client + k) % len(trained.test)])
                result = own.infer(contract.MODEL_NAME, triton_inputs(trained.test, row), model_version="1")
                assert result.as_numpy(contract.SCORE).shape == (1, 1)
            return per_client
        finally:
            own.close()

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        done = sum(pool.map(worker, range(32)))
    inferences, executions = _stats(client)
    client.close()
    assert done == 32 * per_client
    assert inferences - inferences_before == 32 * per_client
    assert executions - executions_before < inferences - inferences_before


def test_the_gateways_scorer_holds_small_calls_together_and_overlaps_large_ones(
    trained: Trained, triton: TritonServer
) -> None:
    from preftrack_gateway.triton import TritonScorer

    data = trained.test
    client = grpcclient.InferenceServerClient(triton.grpc_url)

    def requests() -> int:
        stats = client.get_inference_statistics(contract.MODEL_NAME, "1", as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"].get("count", 0))

    def columns(start: int, n: int) -> tuple[np.ndarray, ...]:
        rows = np.arange(start, start + n) % len(data)
        return (
            data.user_id[rows],
            data.item_id[rows],
            data.category_id[rows],
            data.features[rows],
            data.attributes[rows],
        )

    async def run() -> tuple[list[np.ndarray], list[np.ndarray], int, int, int, int]:
        scorer = TritonScorer(triton.grpc_url)
        try:
            alone = [await scorer.score(*columns(10 * k, 10), version=1, timeout_s=30) for k in range(32)]
            before = requests()
            together = await asyncio.gather(
                *(scorer.score(*columns(10 * k, 10), version=1, timeout_s=30) for k in range(32))
            )
            small = requests() - before
            before = requests()
            await asyncio.gather(*(scorer.score(*columns(300 * k, 300), version=1, timeout_s=30) for k in range(3)))
            large = requests() - before
            before = requests()
            await asyncio.gather(
                scorer.score(*columns(0, 300), version=1, timeout_s=30),
                *(scorer.score(*columns(10 * k, 10), version=1, timeout_s=30) for k in range(10)),
            )
            mixed = requests() - before
            before = requests()
            await asyncio.gather(
                *(scorer.score(*columns(10 * k, 10), version=1, timeout_s=30) for k in range(3)),
                scorer.score(*columns(0, 300), version=1, timeout_s=30),
                *(scorer.score(*columns(10 * k, 10), version=1, timeout_s=30) for k in range(3)),
            )
            return alone, list(together), small, large, mixed, requests() - before
        finally:
            await scorer.close()

    alone, together, small, large, mixed, behind = asyncio.run(run())
    client.close()
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # 32 calls of 10 rows: the first is sent at once, the other 31 wait for it and leave as one request.
    assert small == 2
    # 3 calls of 300 rows: the first two run side by side, the third waits for one of them.
    assert large == 3
    # A small call does not wait behind a large request: the first goes beside it, the other 9 wait for that one.
    assert mixed == 3
    # Nor a large call behind small ones: it takes the free slot; the 5 small calls waiting leave together.
    assert behind == 3


def test_bad_request_gets_its_own_error_and_others_succeed(trained: Trained, triton: TritonServer) -> None:
    bad = triton_inputs(trained.test, slice(0, 2))
    features = trained.test.features[0:2].copy()
    features[1, 3] = np.nan
    bad[3].set_data_from_numpy(features)
    barrier = threading.Barrier(9)

    def send(inputs):
        barrier.wait()
        return _infer(triton.grpc_url, inputs, version="1")

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        good = [pool.submit(send, triton_inputs(trained.test, slice(k, k + 3))) for k in range(8)]
        failing = pool.submit(send, bad)
        for future in good:
            assert future.result().shape == (3,)
        with pytest.raises(InferenceServerException, match="FEATURES contains NaN"):
            failing.result()


def test_wrong_shape_is_rejected_with_a_clear_message(trained: Trained, triton: TritonServer) -> None:
    inputs = triton_inputs(trained.test, slice(0, 2))
    wrong = grpcclient.InferInput(contract.FEATURES, [2, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    inputs[3] = wrong
    with pytest.raises(InferenceServerException, match="FEATURES"):
        _infer(triton.grpc_url, inputs, version="1")


def test_corrupt_version_fails_to_load_and_version_1_keeps_answering(
    trained: Trained, scratch_repository, tmp_path
) -> None:
    model_dir = scratch_repository / contract.MODEL_NAME
    with TritonServer(TritonConfig(repository=scratch_repository, work_dir=tmp_path / "triton")) as server:
        # Version 2 = version 1 with its variables truncated, as a crashed copy would leave it.
        shutil.copytree(model_dir / "1", model_dir / "2")
        variables = next((model_dir / "2" / export.SAVEDMODEL_DIR / "variables").glob("variables.data-*"))
        variables.write_bytes(variables.read_bytes()[: variables.stat().st_size // 3])

        stop = threading.Event()
        outcomes: list[bool] = []
        inputs = triton_inputs(trained.test, slice(0, 4))

        def hammer() -> None:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            while not stop.is_set():
                for version in ("1", ""):
                    try:
                        scores = client.infer(contract.MODEL_NAME, inputs, model_version=version).as_numpy(
                            contract.SCORE
                        )
                        outcomes.append(scores.shape == (4, 1))
                    except InferenceServerException:
                        outcomes.append(False)
            client.close()

        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(0.5)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            with pytest.raises(InferenceServerException):
                client.load_model(contract.MODEL_NAME)
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join()
        assert client.is_model_ready(contract.MODEL_NAME, "1")
        assert not client.is_model_ready(contract.MODEL_NAME, "2")
        client.close()
    assert len(outcomes) > 20
    assert all(outcomes), f"{outcomes.count(False)} of {len(outcomes)} requests failed during the bad load"
