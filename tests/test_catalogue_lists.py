"""Lists from the whole catalogue, through the real gateway and Triton: Recommend without candidates, business
rules (filters, boosts, a diversity cap), SimilarItems and BuyAgain, with the SDK's sync and asyncio clients."""

from __future__ import annotations

import asyncio
import time

import pytest

import preftrack
from preftrack import Boost, Diversity, FeedbackEvent, Item, ItemFilter
from preftrack.errors import InvalidRequestError, NotFoundError

pytestmark = pytest.mark.e2e

DAY_S = 86_400.0


def _catalogue() -> list[Item]:
    """60 items: 3 categories × 20, 4 brands, prices 1 to 60, every fifth item out of stock, a third untracked."""
    items = []
    for j in range(60):
        stock = None if j % 3 == 0 else (0 if j % 5 == 0 else 10)
        items.append(
            Item(
                item_id=f"c-{j}",
                categories=(f"cat-{j % 3}",),
                price=float(j + 1),
                attributes={"brand": f"brand-{j % 4}"},
                title=f"thing {j}",
                stock=stock,
            )
        )
    return items


def _history(now_s: float) -> list[FeedbackEvent]:
    """A re-buyer of c-3 (every 10 days) and c-6; many shoppers who buy c-1 with c-4 (co-occurrence) and look at
    c-2."""
    events = []
    for n in range(4):
        t = now_s - (40 - 10 * n) * DAY_S
        events.append(FeedbackEvent(user_id="rebuyer", item_id="c-3", event_type="purchase", timestamp_s=t))
    events.append(FeedbackEvent(user_id="rebuyer", item_id="c-6", event_type="purchase", timestamp_s=now_s - 3600))
    for u in range(12):
        t = now_s - 2 * DAY_S + u * 60
        events.append(FeedbackEvent(user_id=f"pair-{u}", item_id="c-1", event_type="purchase", timestamp_s=t))
        events.append(FeedbackEvent(user_id=f"pair-{u}", item_id="c-4", event_type="purchase", timestamp_s=t + 30))
        events.append(FeedbackEvent(user_id=f"pair-{u}", item_id="c-2", event_type="view", timestamp_s=t + 40))
    return events


@pytest.fixture
def shop(gateway):
    """The gateway with the catalogue and the history above; yields (target, now)."""
    now = time.time()
    with preftrack.Client(gateway.target) as client:
        assert client.upsert_items(_catalogue()) == 60
        assert client.send(_history(now)).accepted == len(_history(now))
    return gateway.target, {item.item_id: item for item in _catalogue()}


def _passes(item: Item, f: ItemFilter) -> bool:
    """The filter's meaning, written out independently of the gateway's code."""
    ok = not f.in_stock_only or item.stock is None or item.stock > 0
    ok = (
        ok and (f.min_price is None or item.price >= f.min_price) and (f.max_price is None or item.price <= f.max_price)
    )
    ok = ok and (not f.categories_in or bool(set(item.categories) & set(f.categories_in)))
    return ok and not set(item.categories) & set(f.categories_out)


def test_recommend_without_candidates_retrieves_personal_lists_that_obey_the_rules(shop) -> None:
    target, catalogue = shop
    with preftrack.Client(target) as client:
        # Candidates come from the catalogue, not from the caller, each with the source that found it: a re-buyer's
        # items from what they buy again (the model then ranks them among the rest).
        ten = client.recommend("rebuyer", k=10)
        assert len(ten.items) == 10 and not ten.fewer_than_k and ten.recommendation_id
        assert all(i.item_id in catalogue and i.source for i in ten.items), ten
        every = {i.item_id: i.source for i in client.recommend("rebuyer", k=60).items}
        assert len(every) == 60 and every["c-3"] == every["c-6"] == "buy_again", every
        # Someone who just bought c-1 is offered c-4, bought with it by others.
        client.send(FeedbackEvent(user_id="newcomer", item_id="c-1", event_type="purchase"))
        theirs = {i.item_id: i.source for i in client.recommend("newcomer", k=60).items}
        assert theirs["c-4"] == "co_occurrence", theirs
        # A brand-new user still gets k items (popular ones).
        assert len(client.recommend("nobody-yet", k=7).items) == 7

        # Filters: nothing excluded ever comes back, and a filter that leaves few items says so.
        rules = ItemFilter(in_stock_only=True, min_price=5.0, max_price=40.0, categories_out=("cat-2",))
        listed = client.recommend("rebuyer", k=30, item_filter=rules)
        assert listed.items and all(_passes(catalogue[i.item_id], rules) for i in listed.items), listed
        narrow = ItemFilter(categories_in=("cat-1",), max_price=12.0)  # c-1, c-4, c-7, c-10
        few = client.recommend("rebuyer", k=10, item_filter=narrow)
        assert few.fewer_than_k and {i.item_id for i in few.items} == {"c-1", "c-4", "c-7", "c-10"}, few
        # The same rules apply to candidates the caller sends.
        sent = client.recommend("rebuyer", ["c-1", "c-2", "c-5", "c-4"], k=4, item_filter=narrow)
        assert [i.item_id for i in sent.items] in (["c-1", "c-4"], ["c-4", "c-1"]) and sent.fewer_than_k
        # What the user bought within a day goes; what they bought 10 days ago stays.
        recent = client.recommend("rebuyer", k=60, item_filter=ItemFilter(exclude_bought_within_days=1.0))
        assert "c-6" not in {i.item_id for i in recent.items} and "c-3" in {i.item_id for i in recent.items}
        assert len(recent.items) == 59 and recent.fewer_than_k

        # A boost puts a category on top; a cap of one per brand leaves four items at most (four brands).
        boosted = client.recommend("rebuyer", k=5, boosts=[Boost(target="category", values=["cat-2"], factor=100.0)])
        assert all(catalogue[i.item_id].categories == ("cat-2",) for i in boosted.items), boosted
        capped = client.recommend("rebuyer", k=10, diversity=Diversity(attribute="brand", max_per_value=1))
        brands = [catalogue[i.item_id].attributes["brand"] for i in capped.items]
        assert len(brands) == len(set(brands)) == 4 and capped.fewer_than_k


def test_similar_items_and_buy_again_sync_and_async_alike(shop) -> None:
    target, catalogue = shop
    with preftrack.Client(target) as client:
        similar = client.similar_items("c-1", k=5)
        assert similar.items[0].item_id == "c-4" and "c-1" not in {i.item_id for i in similar.items}, similar
        assert all(0 < i.score <= 1 for i in similar.items)
        in_stock = client.similar_items("c-1", k=20, item_filter=ItemFilter(in_stock_only=True))
        assert all(_passes(catalogue[i.item_id], ItemFilter(in_stock_only=True)) for i in in_stock.items)
        again = client.buy_again("rebuyer", k=5)
        assert [i.item_id for i in again][:2] == ["c-3", "c-6"], again  # c-3 is due (10 days since), c-6 not yet
        assert again[0].score > again[1].score >= 0
        assert client.buy_again("nobody-yet", k=5) == ()

        with pytest.raises(NotFoundError, match="item_id"):
            client.similar_items("no-such-item", k=5)
        with pytest.raises(InvalidRequestError, match="k"):
            client.buy_again("rebuyer", k=0)
        with pytest.raises(InvalidRequestError, match=r"filter\.categories_out"):
            client.recommend("rebuyer", k=5, item_filter=ItemFilter(categories_in=("a",), categories_out=("a",)))
        with pytest.raises(InvalidRequestError, match=r"filter\.max_price"):
            client.recommend("rebuyer", k=5, item_filter=ItemFilter(min_price=9.0, max_price=1.0))
        with pytest.raises(InvalidRequestError, match=r"boosts\[0\]\.factor"):
            client.recommend("rebuyer", k=5, boosts=[Boost(target="items", values=["c-1"], factor=0.0)])
        with pytest.raises(InvalidRequestError, match=r"diversity\.max_per_value"):
            client.recommend("rebuyer", k=5, diversity=Diversity(max_per_value=-1))
        with pytest.raises(InvalidRequestError, match="boost target"):
            client.recommend("rebuyer", k=5, boosts=[Boost(target="colour", values=["red"], factor=2.0)])

    async def the_async_client() -> tuple[object, object]:
        async with preftrack.AsyncClient(target) as aclient:
            return await aclient.similar_items("c-1", k=5), await aclient.buy_again("rebuyer", k=5)

    assert asyncio.run(the_async_client()) == (similar, again)
