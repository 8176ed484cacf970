"""Make the screenshots of docs/console.md: ``.venv/bin/python -m tests.console_screenshots``.

Starts a nats-server and a ``windshift-grpc serve`` with the console on (and
a tokens file), fills them with a small shop (orders with a lagging
consumer, dead letters, a state store), lets the server sample a minute of
lag, and photographs each page in Debian's Chromium (``make browser``) into
``docs/console/``. Takes about a minute and a half; rerun it after changing a page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
from pathlib import Path

from playwright.async_api import ViewportSize
from pydantic import BaseModel

import windshift
from tests.grpc.test_console import chromium
from tests.grpc_fixtures import ServeProcess, serve_env
from windshift import EmbeddedNats, StreamPointer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "console"
LAPTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}


class OrderCreated(BaseModel):
    id: str
    customer: str
    total: float
    items: int


class Cart(BaseModel):
    items: list[str]


# Their data type (WS-Data-Type) is the module and name: a shop's, not this script's.
OrderCreated.__module__ = Cart.__module__ = "shop.v1"


async def fill(client: windshift.Client, seconds: float) -> None:
    """A shop: orders consumed by billing (which falls behind) and shipping (which rejects some)."""
    await client.ensure_stream("orders", subjects=["orders.>"])
    await client.ensure_stream("payments", subjects=["payments.>"])
    start = StreamPointer.start()
    await client.ensure_consumer("orders", "billing", start=start)
    await client.ensure_consumer(
        "orders", "shipping", start=start, dead_letter_stream="orders-dead"
    )
    await client.ensure_consumer("payments", "ledger", start=start)
    carts = await client.ensure_store("carts", history=5)
    for items in (["tea"], ["tea", "milk"], ["tea", "milk", "scones"]):
        await carts.set("cart.ada", Cart(items=items))
    await carts.set("cart.grace", Cart(items=["coffee"]))

    async def shipping() -> None:
        async with client.subscribe("orders", "shipping") as events:
            async for event in events:
                order = event.unpack(OrderCreated)
                if order.items > 9:
                    await event.reject(permanently=True, reason="too many items for one parcel")
                else:
                    await event.ack()

    async def billing() -> None:
        # Slow at first, then catches up: a lag that rises and falls.
        async with client.subscribe("orders", "billing") as events:
            count = 0
            async for event in events:
                count += 1
                await event.ack()
                await asyncio.sleep(1.2 if count < 40 else 0.05)

    workers = [asyncio.create_task(shipping()), asyncio.create_task(billing())]
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    number = 0
    while loop.time() < end:
        number += 1
        await client.publish(
            "orders.created",
            OrderCreated(
                id=f"o-{1000 + number}",
                customer=("ada", "grace", "linus")[number % 3],
                total=round(9.5 + number * 1.25, 2),
                items=12 if number % 9 == 0 else 1 + number % 4,
            ),
            idempotency_key=f"order-{number}",
        )
        if number % 3 == 0:
            await client.publish(
                "payments.received",
                OrderCreated(id=f"o-{1000 + number}", customer="ada", total=10.0, items=1),
            )
        await asyncio.sleep(0.5)
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


async def photograph(url: str, token: str, reader_token: str, executable: str) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable)
        context = await browser.new_context(viewport=LAPTOP, device_scale_factor=1)
        page = await context.new_page()

        async def shot(
            name: str, ready: str, hash_: str | None = None, *, whole: bool = True
        ) -> None:
            if hash_ is not None:
                await page.goto(url + hash_)
            await expect(page.locator(ready).first).to_be_visible(timeout=20_000)
            await page.screenshot(path=str(OUT / f"{name}.png"), full_page=whole)
            print(f"docs/console/{name}.png")

        await page.goto(url)
        await shot("login", "#login")
        await page.fill("#token", token)
        await page.click("#login button[type=submit]")
        await shot("streams", "#streams", "#/streams")
        await shot("stream", "#events [data-event]", "#/streams/orders", whole=False)
        await shot("consumers", ".chart polyline", "#/consumers")
        await shot("dead-letters", "#dead-letter-streams", "#/dead-letters")
        await shot("dead-letter-stream", "#letters", "#/dead-letters/orders-dead")
        await page.locator("#letters tr[data-letter] a").first.click()
        await shot("dead-letter", "pre.data")
        await shot("stores", "#stores", "#/stores")
        await shot("store", "#keys", "#/stores/carts")
        await shot("state-key", "#history", "#/stores/carts/cart.ada")
        await context.close()

        phone = await browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True)
        page = await phone.new_page()
        await page.goto(url)
        await page.fill("#token", reader_token)
        await page.click("#login button[type=submit]")
        await shot("phone-consumers", ".chart polyline", "#/consumers")
        await shot("phone-dead-letters-read-only", "#read-only", "#/dead-letters/orders-dead")
        await browser.close()


async def main(seconds: float) -> int:
    executable = chromium()
    if executable is None:
        print("no Chromium on the PATH: run `make browser` (as root) first", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = {"admin": secrets.token_urlsafe(24), "support": secrets.token_urlsafe(24)}
        path = Path(tmp) / "tokens.json"
        path.write_text(
            json.dumps(
                {
                    "tokens": [
                        {
                            "name": "ops",
                            "token": tokens["admin"],
                            **{p: [">"] for p in ("publish", "consume", "manage", "read_state")},
                        },
                        {
                            "name": "support",
                            "token": tokens["support"],
                            "consume": ["orders", "orders-dead"],
                            "metrics": ["payments"],
                            "read_state": ["carts"],
                        },
                    ]
                }
            )
        )
        path.chmod(0o600)
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats")
        await nats.start()
        server = ServeProcess(
            serve_env(
                nats.url,
                WINDSHIFT_AUTH_FILE=str(path),
                WINDSHIFT_CONSOLE="on",
                WINDSHIFT_SAMPLE_INTERVAL="2",
                HEALTH_HOST="127.0.0.1",
            )
        )
        await server.start()
        try:
            async with windshift.connect(nats.url) as client:
                await fill(client, seconds)
            url = f"http://127.0.0.1:{server.health_port}/console/"
            await photograph(url, tokens["admin"], tokens["support"], executable)
        finally:
            await server.stop()
            await nats.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=75, help="how long to publish for")
    sys.exit(asyncio.run(main(parser.parse_args().seconds)))
