"""Users' attributes (UpsertUsers) reach the model as pseudonymised tokens: they move a user's scores, survive a
restart, are replaced or cleared by the next upsert, and go with ForgetUser."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

import preftrack
from preftrack.admin import AdminClient
from preftrack_dev.process import GatewayProcess

pytestmark = pytest.mark.e2e

ITEMS = [f"i-{n}" for n in range(40)]
AS_OF = time.time()  # every score is read at one instant: only the attributes differ


def _scores(target: str, user: str) -> np.ndarray:
    with preftrack.Client(target) as client:
        return np.array([s.score for s in client.score(user, ITEMS, as_of_s=AS_OF).items])


def test_attributes_move_scores_persist_and_are_forgotten(gateway, triton, trained, tmp_path) -> None:
    plain = _scores(gateway.target, "newcomer")
    with preftrack.Client(gateway.target) as client:
        assert client.upsert_users([preftrack.User(user_id="newcomer", attributes={"segment": "s3"})]) == 1
    in_s3 = _scores(gateway.target, "newcomer")
    assert np.abs(in_s3 - plain).max() > 1e-4  # the model reads them (version 1 learned the shop's segments)
    with preftrack.Client(gateway.target) as client:
        client.upsert_users([preftrack.User(user_id="newcomer", attributes={"segment": "s5", "device": "ios"})])
        in_s5 = _scores(gateway.target, "newcomer")
        assert np.abs(in_s5 - in_s3).max() > 1e-4  # replaced, not added to
        client.upsert_users([preftrack.User(user_id="newcomer")])
    np.testing.assert_allclose(_scores(gateway.target, "newcomer"), plain, atol=1e-6)  # cleared
    with preftrack.Client(gateway.target) as client:
        client.upsert_users([preftrack.User(user_id="newcomer", attributes={"segment": "s3"})])
        with pytest.raises(preftrack.InvalidRequestError, match="at most 8"):
            client.upsert_users([preftrack.User(user_id="x", attributes={f"a{k}": "v" for k in range(9)})])

    # Neither the pairs nor the user id are stored in clear, and a restart reads the tokens back from the store.
    database = gateway.env["PREFTRACK_STORE_URL"].removeprefix("sqlite:///")
    dump = "\n".join(sqlite3.connect(database).iterdump())
    assert "newcomer" not in dump and "segment" not in dump
    assert gateway.stop() == 0, gateway.log_tail()
    with GatewayProcess(gateway.env, tmp_path / "restarted.log") as restarted:
        np.testing.assert_allclose(_scores(restarted.target, "newcomer"), in_s3, atol=1e-6)
        with AdminClient(restarted.target) as admin:
            admin.forget_user("newcomer")
        np.testing.assert_allclose(_scores(restarted.target, "newcomer"), plain, atol=1e-6)
    assert sqlite3.connect(database).execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
