"""The registry's state machine: random sequences of trainer exports, rollouts, decisions, forbidden moves and
process restarts, on a real SQLite store; plus two replicas racing on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from preftrack_gateway.registry import CANDIDATE_STATES, TRANSITIONS, Move, Registry, TransitionError, allowed
from preftrack_gateway.store import VersionRecord, open_store
from preftrack_gateway.store.base import VERSION_STATES


def _record(version: int, state: str) -> VersionRecord:
    now = time.time()
    return VersionRecord(version=version, state=state, note="test", created_at=now, updated_at=now)


def test_every_state_has_rules_and_final_states_have_no_way_out() -> None:
    assert set(TRANSITIONS) == {None, *VERSION_STATES}
    for final in ("rejected", "failed", "rolled_back"):
        assert not TRANSITIONS[final]
    assert allowed("canary", "serving") and not allowed("exported", "serving") and not allowed("failed", "loading")


class RegistryMachine(RuleBasedStateMachine):
    """Operations as the trainer, a controller and an admin issue them, with restarts in between. After every
    step the stored registry and journal are checked against the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(__import__("tempfile").mkdtemp())
        self.url = f"sqlite:///{self.folder / 'registry.db'}"
        self.store = self.run(open_store(self.url))
        self.registry = Registry(self.store)
        self.next_version = 1
        self.run(self.registry.register(_record(self.new_version(), "serving"), actor="test", reason="bootstrap"))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def new_version(self) -> int:
        self.next_version += 1
        return self.next_version - 1

    def records(self) -> dict[int, VersionRecord]:
        return {r.version: r for r in self.run(self.registry.versions())}

    def stable(self) -> int:
        return next(v for v, r in self.records().items() if r.state == "serving")

    def candidate(self) -> int | None:
        return next((v for v, r in self.records().items() if r.state in CANDIDATE_STATES), None)

    @rule(passed=st.booleans())
    def trainer_exports(self, passed: bool) -> None:
        record = _record(self.new_version(), "exported" if passed else "rejected")
        assert self.run(self.registry.register(record, actor="trainer", reason="gate"))

    @rule(mode=st.sampled_from(["canary", "shadow"]), data=st.data())
    def start_rollout(self, mode: str, data: st.DataObject) -> None:
        if self.candidate() is not None:
            return
        ready = sorted(v for v, r in self.records().items() if r.state in ("exported", "retired"))
        if not ready:
            return
        version = data.draw(st.sampled_from(ready))
        assert self.run(self.registry.move([Move(version, "loading")], actor="controller", reason="start"))
        outcome = data.draw(st.sampled_from([mode, "failed"]))
        assert self.run(self.registry.move([Move(version, outcome)], actor="controller", reason="loaded"))

    @rule()
    def promote(self) -> None:
        candidate = self.candidate()
        if candidate is not None:
            moves = [Move(candidate, "serving"), Move(self.stable(), "retired")]
            assert self.run(self.registry.move(moves, actor="controller", reason="promote"))

    @rule()
    def roll_back_candidate(self) -> None:
        candidate = self.candidate()
        if candidate is not None:
            assert self.run(self.registry.move([Move(candidate, "rolled_back")], actor="admin", reason="worse"))

    @rule()
    def roll_back_stable(self) -> None:
        retired = [v for v, r in self.records().items() if r.state == "retired"]
        if retired:
            moves = [Move(self.stable(), "rolled_back"), Move(max(retired), "serving")]
            assert self.run(self.registry.move(moves, actor="admin", reason="revert"))

    @rule(data=st.data(), to=st.sampled_from(VERSION_STATES))
    def anything_else_is_refused(self, data: st.DataObject, to: str) -> None:
        """A random move: allowed ones may go through; forbidden ones raise and change nothing."""
        records = self.records()
        version = data.draw(st.sampled_from(sorted(records)))
        before = {v: r.state for v, r in records.items()}
        try:
            self.run(self.registry.move([Move(version, to)], actor="fuzz", reason="random"))
        except TransitionError:
            assert {v: r.state for v, r in self.records().items()} == before

    @rule()
    def stale_replica_loses(self) -> None:
        """A second replica acting on an old view of the registry cannot undo or duplicate a decision."""
        stale = self.records()
        candidate = self.candidate()
        if candidate is None:
            return
        assert self.run(self.registry.move([Move(candidate, "rolled_back")], actor="replica-a", reason="a"))
        moves = [Move(candidate, "serving"), Move(self.stable(), "retired")]
        assert not self.run(self.registry.move(moves, actor="replica-b", reason="b", records=stale))

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.run(open_store(self.url))
        self.registry = Registry(self.store)

    @invariant()
    def exactly_one_stable_and_at_most_one_candidate(self) -> None:
        states = [r.state for r in self.records().values()]
        assert states.count("serving") == 1
        assert sum(s in CANDIDATE_STATES for s in states) <= 1

    @invariant()
    def every_stored_transition_is_allowed_and_explains_the_state(self) -> None:
        last: dict[int, str | None] = {}
        for entry in self.run(self.store.journal(kind="transition", limit=1_000_000)):
            assert allowed(entry.details["from"], entry.details["to"]), entry
            assert last.get(entry.version) == entry.details["from"], entry
            last[entry.version] = entry.details["to"]
        assert last == {v: r.state for v, r in self.records().items()}

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()


RegistryMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRegistryMachine = RegistryMachine.TestCase


async def _told(move: Awaitable[bool]) -> bool:
    """A move's outcome, a refusal counted as losing: a replica that reads the states after the other's decision
    has committed is refused the move (the version's state is final, or it serves) rather than told False."""
    try:
        return await move
    except TransitionError:
        return False


@pytest.mark.e2e
def test_two_replicas_racing_on_postgres_decide_once(fresh_postgres_url: str) -> None:
    async def run() -> None:
        a, b = await open_store(fresh_postgres_url), await open_store(fresh_postgres_url)
        try:
            ra, rb = Registry(a), Registry(b)
            assert await ra.register(_record(1, "serving"), actor="a", reason="bootstrap")
            assert not await rb.register(_record(1, "exported"), actor="b", reason="late")
            for version in range(2, 12):
                assert await ra.register(_record(version, "exported"), actor="trainer", reason="gate")
                await ra.move([Move(version, "loading")], actor="a", reason="start")
                await ra.move([Move(version, "canary")], actor="a", reason="start")
                stable = next(r.version for r in await ra.versions() if r.state == "serving")
                promote = [Move(version, "serving"), Move(stable, "retired")]
                results = await asyncio.gather(
                    _told(ra.move(promote, actor="a", reason="promote")),
                    _told(rb.move([Move(version, "rolled_back")], actor="b", reason="roll back")),
                )
                assert sorted(results) == [False, True]  # one decision wins, the other is told
                states = [r.state for r in await ra.versions()]
                assert states.count("serving") == 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())
