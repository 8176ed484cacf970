"""Unit tests of the example worker's handler, with windshift.testing (no server).

Run them with pytest from the repository root (they run in the project's suite):

    .venv/bin/pytest examples/test_worker.py
"""

from __future__ import annotations

from google.protobuf.wrappers_pb2 import StringValue
from orders_pb2 import OrderCreated
from worker import customer_of, fulfil_order

from windshift.testing import make_event, run_handler


async def test_an_order_is_acknowledged() -> None:
    result = await run_handler(
        fulfil_order, OrderCreated(id="o-1", customer="ada", total_cents=100)
    )
    assert result.acknowledged


async def test_what_is_no_order_is_rejected_for_good_by_the_handler() -> None:
    result = await run_handler(fulfil_order, StringValue(value="not an order"))
    assert result.outcome == "rejected_permanently"
    assert result.error is None  # the handler settled it itself, without raising


def test_orders_are_ordered_by_customer() -> None:
    assert customer_of(make_event(OrderCreated(id="o-2", customer="grace"))) == "grace"
