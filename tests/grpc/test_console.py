"""The web console (``WINDSHIFT_CONSOLE=on``) of a real ``windshift-grpc serve``.

One serve for the module, with a tokens file, on the session's nats-server
(so that the tests publish, consume and reject through the library, as an
application beside the server would). The API-level tests check the
permission rules and the attacks a holder of a valid token (or a page on
another site) could try; the browser tests drive Debian's Chromium through
Playwright and skip, saying so, where no Chromium is installed (`make
browser` installs it as root).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._pki import Pki
from tests.grpc_fixtures import ServeProcess, StartServe, serve_env
from windshift import EmbeddedNats, StreamPointer
from windshift_grpc.console.auth import CSRF_HEADER
from windshift_grpc.settings import Settings, SettingsError

STATIC = Path(__file__).resolve().parents[2] / "windshift_grpc" / "console" / "static"
#: How long the browser waits for what a page should come to show (it polls every 2 s,
#: the server samples every second).
SHOWN = 20_000


@dataclass
class Console:
    server: ServeProcess
    tokens: dict[str, str]  # role -> token
    tokens_file: Path
    lagging: str  # a stream with a consumer "worker"
    handled: str  # a stream whose consumer "handler" moves letters to `dead`
    dead: str
    store: str
    other: str  # another tenant's stream
    other_store: str
    client: windshift.Client

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.health_port}/console/"


def order_type() -> descriptor_pb2.FileDescriptorSet:
    """A descriptor set of one message type the server does not know: ``acme.Order {id}``."""
    file = descriptor_pb2.FileDescriptorProto(
        name="acme/order.proto", package="acme", syntax="proto3"
    )
    file.message_type.add(name="Order").field.add(
        name="id",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    return descriptor_pb2.FileDescriptorSet(file=[file])


def _order(order_id: str) -> AnyProto:
    """An ``acme.Order`` as an Any, made without generated code (its field 1, a string)."""
    text = order_id.encode()
    return AnyProto(
        type_url="type.googleapis.com/acme.Order", value=b"\x0a" + bytes([len(text)]) + text
    )


def _entries(names: dict[str, str], tokens: dict[str, str]) -> list[dict[str, Any]]:
    ours = [names["lagging"], names["handled"], names["dead"]]
    return [
        {
            "name": "admin",
            "token": tokens["admin"],
            "publish": [">"],
            "consume": [">"],
            "manage": [">"],
            "read_state": [">"],
            "write_state": [">"],
            "metrics": [">"],
        },
        # Reads everything of ours; manages nothing.
        {
            "name": "reader",
            "token": tokens["reader"],
            "consume": ours,
            "read_state": [names["store"]],
        },
        # Manages the dead letters but may not publish where they go back to.
        {
            "name": "janitor",
            "token": tokens["janitor"],
            "consume": [names["dead"]],
            "manage": [names["dead"]],
        },
        # Counts only: sees the stream and its lag, not its events.
        {"name": "watcher", "token": tokens["watcher"], "metrics": [names["lagging"]]},
        # Withdrawn by a reload in a test.
        {"name": "leaver", "token": tokens["leaver"], "consume": [names["lagging"]]},
        # Another tenant: everything, on its own stream and store.
        {
            "name": "other",
            "token": tokens["other"],
            "publish": [f"{names['other']}.>"],
            "consume": [names["other"]],
            "manage": [names["other"]],
            "read_state": [names["other_store"]],
            "write_state": [names["other_store"]],
            "metrics": [names["other"]],
        },
    ]


async def _dead_letter(console: Console, text: str) -> int:
    """Publish ``text`` on the handled stream and reject it permanently; the letter's id."""
    await console.client.publish(f"{console.handled}.in", StringValue(value=text))
    async with console.client.subscribe(console.handled, "handler") as events:
        async for event in events:
            if event.unpack(StringValue).value == text:
                await event.reject(permanently=True, reason=f"cannot handle {text}")
                break
            await event.ack()
    letters = await console.client.dead_letters(console.dead).list(limit=1000)
    return next(letter.id for letter in letters if letter.to_json() == text)


@pytest.fixture(scope="module")
async def console(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    tag = secrets.token_hex(3)
    names = {
        key: f"{key}{tag}"
        for key in ("lagging", "handled", "dead", "store", "other", "other_store")
    }
    roles = ("admin", "reader", "janitor", "watcher", "other", "leaver")
    tokens = {role: f"{role}-{secrets.token_urlsafe(24)}" for role in roles}
    path = tmp / "tokens.json"
    path.write_text(json.dumps({"tokens": _entries(names, tokens)}))
    path.chmod(0o600)
    descriptors = tmp / "acme.binpb"
    descriptors.write_bytes(order_type().SerializeToString())
    async with windshift.connect(nats_server.url) as client:
        start = StreamPointer.start()
        for stream in (names["lagging"], names["handled"], names["other"]):
            await client.ensure_stream(stream, subjects=[f"{stream}.>"])
        await client.ensure_consumer(names["lagging"], "worker", start=start)
        await client.ensure_consumer(
            names["handled"], "handler", start=start, dead_letter_stream=names["dead"]
        )
        await client.ensure_consumer(names["other"], "theirs", start=start)
        await client.publish(f"{names['other']}.secret", StringValue(value="their secret"))
        await client.publish(f"{names['other']}.order", _order("o-17"))
        for store in (names["store"], names["other_store"]):
            carts = await client.ensure_store(store, history=5)
            for count in (1, 2, 3):
                await carts.set("cart.1", StringValue(value=f"{count} items"))
        server = ServeProcess(
            serve_env(
                nats_server.url,
                WINDSHIFT_AUTH_FILE=str(path),
                WINDSHIFT_CONSOLE="on",
                WINDSHIFT_CONSOLE_HOSTS="console.test",
                WINDSHIFT_CONSOLE_DESCRIPTORS=str(descriptors),
                WINDSHIFT_SAMPLE_INTERVAL="1",
                HEALTH_HOST="127.0.0.1",
            )
        )
        await server.start()
        try:
            yield Console(server, tokens, path, client=client, **names)
        finally:
            await server.stop()


async def call(
    console: Console,
    path: str,
    token: str | None = None,
    *,
    method: str = "GET",
    csrf: bool = True,
    **headers: str,
) -> tuple[int, Any]:
    """One request to ``/console/<path>``: its status and its JSON (or text)."""
    sent = dict(headers)
    if csrf:
        sent[CSRF_HEADER] = "1"
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, console.url + path, headers=sent, timeout=aiohttp.ClientTimeout(total=10)
        ) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


# --- the API: who may see and do what --------------------------------------------------


@pytest.mark.parametrize("token", [None, "not-a-token-of-the-file-at-all"])
async def test_the_api_needs_a_valid_token(console: Console, token: str | None) -> None:
    status, answer = await call(console, "api/streams", token)
    assert status == 401
    assert "token" in answer["error"]


async def test_the_page_itself_is_served_without_a_token_and_says_so(console: Console) -> None:
    status, page = await call(console, "", csrf=False)
    assert status == 200
    assert "Sign in" in page


async def test_an_api_call_without_the_console_header_is_refused(console: Console) -> None:
    # What a form or an image on another site can send: no custom header.
    status, answer = await call(console, "api/streams", console.tokens["admin"], csrf=False)
    assert status == 403
    assert CSRF_HEADER in answer["error"]


async def test_an_api_call_from_another_origin_is_refused(console: Console) -> None:
    status, _ = await call(
        console,
        f"api/dead-letters/{console.dead}/purge",
        console.tokens["admin"],
        method="POST",
        Origin="https://evil.example",
    )
    assert status == 403


@pytest.mark.parametrize("path", ["", "api/session"])
async def test_a_host_name_the_console_does_not_know_is_refused(
    console: Console, path: str
) -> None:
    # DNS rebinding: evil.example resolves to this server's address.
    status, _ = await call(console, path, console.tokens["admin"], Host="evil.example")
    assert status == 421
    for known in ("localhost", "console.test", "127.0.0.1"):
        status, _ = await call(console, path, console.tokens["admin"], Host=f"{known}:80")
        assert status == 200, known


async def test_a_tenant_sees_its_own_stream_and_nothing_of_anyone_elses(
    console: Console,
) -> None:
    token = console.tokens["other"]
    status, answer = await call(console, "api/streams", token)
    assert status == 200
    assert [stream["name"] for stream in answer["streams"]] == [console.other]
    _, consumers = await call(console, "api/consumers", token)
    assert {c["stream"] for c in consumers["consumers"]} <= {console.other}
    _, dead = await call(console, "api/dead-letters", token)
    assert dead["dead_letter_streams"] == []
    _, stores = await call(console, "api/stores", token)
    assert stores["stores"] == [console.other_store]
    for path in (
        f"api/streams/{console.lagging}",
        f"api/streams/{console.lagging}/events",
        f"api/consumers?stream={console.lagging}",
        f"api/dead-letters/{console.dead}",
        f"api/dead-letters/{console.dead}/1",
        f"api/stores/{console.store}/keys",
        f"api/stores/{console.store}/entry?key=cart.1",
    ):
        status, answer = await call(console, path, token)
        assert status == 403, path
        assert "'other'" in answer["error"], path


async def test_the_streams_behind_state_stores_are_never_shown_as_streams(
    console: Console,
) -> None:
    # Even '>' on every stream permission never reaches the streams behind stores.
    internal = f"KV_{console.store}"
    _, answer = await call(console, "api/streams", console.tokens["admin"])
    assert internal not in {stream["name"] for stream in answer["streams"]}
    for path in (f"api/streams/{internal}", f"api/streams/{internal}/events"):
        status, _ = await call(console, path, console.tokens["admin"])
        assert status == 403, path


async def test_a_metrics_token_sees_counts_and_lag_but_not_the_events(console: Console) -> None:
    token = console.tokens["watcher"]
    status, answer = await call(console, f"api/streams/{console.lagging}", token)
    assert status == 200
    assert answer["stream"]["may_read"] is False
    status, _ = await call(console, f"api/streams/{console.lagging}/events", token)
    assert status == 403


async def test_a_read_only_token_reads_dead_letters_but_cannot_replay_delete_or_purge(
    console: Console,
) -> None:
    letter = await _dead_letter(console, "read-only")
    token = console.tokens["reader"]
    status, answer = await call(console, f"api/dead-letters/{console.dead}/{letter}", token)
    assert status == 200
    assert answer["letter"]["data"] == {"decoded": True, "json": "read-only"}
    assert answer["may_manage"] is False
    base = f"api/dead-letters/{console.dead}"
    for method, path in (
        ("POST", f"{base}/{letter}/replay"),
        ("DELETE", f"{base}/{letter}"),
        ("POST", f"{base}/purge"),
    ):
        status, answer = await call(console, path, token, method=method)
        assert status == 403, path
        assert "manage" in answer["error"]
    await console.client.dead_letters(console.dead).get(letter)  # still there


async def test_replaying_needs_publish_on_the_letters_subject(console: Console) -> None:
    letter = await _dead_letter(console, "janitor")
    status, answer = await call(
        console,
        f"api/dead-letters/{console.dead}/{letter}/replay",
        console.tokens["janitor"],
        method="POST",
    )
    assert status == 403
    assert f"{console.handled}.in" in answer["error"]
    await console.client.dead_letters(console.dead).get(letter)  # nothing was published


async def test_purge_refuses_a_stream_that_holds_no_dead_letters(console: Console) -> None:
    status, answer = await call(
        console, f"api/dead-letters/{console.other}/purge", console.tokens["admin"], method="POST"
    )
    assert status == 400
    assert console.other in answer["error"]
    assert (await console.client.stream_info(console.other)).events == 2


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("api/streams/{lagging}/events?limit=lots", "'lots'"),
        ("api/streams/{lagging}/events?limit=0", "limit"),
        ("api/streams/{lagging}/events?before=-1", "before"),
        ("api/dead-letters/{dead}/x1", "'x1'"),
        ("api/stores/{store}/entry", "key"),
        ("api/stores/{store}/entry?key=a..b", "a..b"),
        ("api/stores/{store}/keys?pattern=a.>.b", "a.>.b"),
    ],
)
async def test_bad_input_is_a_400_naming_it(console: Console, path: str, named: str) -> None:
    names = {"lagging": console.lagging, "dead": console.dead, "store": console.store}
    status, answer = await call(console, path.format(**names), console.tokens["admin"])
    assert status == 400, answer
    assert named in answer["error"]


async def test_event_data_of_a_type_from_the_descriptor_set_is_decoded(console: Console) -> None:
    status, answer = await call(
        console, f"api/streams/{console.other}/events", console.tokens["other"]
    )
    assert status == 200
    newest, older = answer["events"]
    assert newest["type"] == "acme.Order"
    assert newest["data"] == {"decoded": True, "json": {"id": "o-17"}}
    assert older["data"] == {"decoded": True, "json": "their secret"}  # a well-known type


@pytest.mark.parametrize(
    ("content", "named"),
    [(b"\xff\xff not protobuf", "FileDescriptorSet"), (b"", "no file")],
)
def test_a_bad_descriptor_set_stops_serve_with_one_line(
    tmp_path: Path, content: bytes, named: str
) -> None:
    path = tmp_path / "bad.binpb"
    path.write_bytes(content)
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"WINDSHIFT_AUTH": "none", "WINDSHIFT_CONSOLE_DESCRIPTORS": str(path)})
    assert error.value.name == "WINDSHIFT_CONSOLE_DESCRIPTORS"
    assert named in str(error.value) and "\n" not in str(error.value)


def test_a_descriptor_set_missing_an_import_is_refused(tmp_path: Path) -> None:
    files = order_type()
    files.file[0].dependency.append("acme/missing.proto")
    path = tmp_path / "partial.binpb"
    path.write_bytes(files.SerializeToString())
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"WINDSHIFT_AUTH": "none", "WINDSHIFT_CONSOLE_DESCRIPTORS": str(path)})
    assert "--include_imports" in str(error.value)


async def test_a_state_key_shows_its_history_newest_first(console: Console) -> None:
    status, answer = await call(
        console, f"api/stores/{console.store}/entry?key=cart.1", console.tokens["reader"]
    )
    assert status == 200
    assert [change["json"] for change in answer["history"]] == ["3 items", "2 items", "1 items"]


async def test_with_several_workers_the_supervisor_serves_the_console(
    console: Console, start_serve: StartServe
) -> None:
    # The same tokens and rules: the supervisor of `--workers 2` has its own
    # connection, sampler and tokens, and mounts the same console.
    server = await start_serve(
        workers=2,
        WINDSHIFT_AUTH_FILE=str(console.tokens_file),
        WINDSHIFT_CONSOLE="on",
        WINDSHIFT_SAMPLE_INTERVAL="1",
        HEALTH_HOST="127.0.0.1",
    )
    grouped = replace(console, server=server)
    status, answer = await call(grouped, "api/streams", console.tokens["other"])
    assert status == 200
    assert [stream["name"] for stream in answer["streams"]] == [console.other]
    status, answer = await call(grouped, "api/streams", console.tokens["admin"])
    assert status == 200
    assert console.lagging in {stream["name"] for stream in answer["streams"]}
    letter = await _dead_letter(console, "with workers")
    replay = f"api/dead-letters/{console.dead}/{letter}/replay"
    status, answer = await call(grouped, replay, console.tokens["reader"], method="POST")
    assert status == 403
    assert "manage" in answer["error"]
    status, _ = await call(grouped, replay, console.tokens["admin"], method="POST")
    assert status == 200
    with pytest.raises(windshift.NotFoundError):
        await console.client.dead_letters(console.dead).get(letter)  # replayed, so gone


async def test_no_token_is_ever_logged(console: Console) -> None:
    for token in console.tokens.values():
        await call(console, "api/session", token)
        await call(console, "api/session", token[::-1])  # and an invalid one
    for token in console.tokens.values():
        assert token not in console.server.log
        assert token[::-1] not in console.server.log


async def test_a_token_withdrawn_by_a_reload_is_refused_at_its_next_request(
    console: Console,
) -> None:
    token = console.tokens["leaver"]
    assert (await call(console, "api/session", token))[0] == 200
    entries = json.loads(console.tokens_file.read_text())["tokens"]
    kept = [entry for entry in entries if entry["name"] != "leaver"]
    console.tokens_file.write_text(json.dumps({"tokens": kept}))
    after = len(console.server.lines)
    assert console.server.process is not None
    console.server.process.send_signal(signal.SIGHUP)
    await console.server.wait_for_line("SIGHUP received: reloaded", after=after)
    status, _ = await call(console, f"api/streams/{console.lagging}", token)
    assert status == 401
    assert (await call(console, "api/session", console.tokens["reader"]))[0] == 200


def test_the_pages_load_nothing_from_the_network() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path.name
        assert "https://" not in text and "//cdn" not in text, path.name


def test_under_client_certificates_alone_the_console_stays_on_loopback(pki: Pki) -> None:
    # The HTTP port checks no certificate: an open console would be more than the API allows.
    mutual = {
        "GRPC_TLS_CERT": str(pki.server_cert),
        "GRPC_TLS_KEY": str(pki.server_key),
        "GRPC_TLS_CLIENT_CA": str(pki.ca),
        "WINDSHIFT_CONSOLE": "on",
    }
    with pytest.raises(SettingsError) as error:
        Settings.from_env(mutual)
    assert error.value.name == "WINDSHIFT_CONSOLE"
    assert "HEALTH_HOST=127.0.0.1" in str(error.value)
    assert Settings.from_env({**mutual, "HEALTH_HOST": "127.0.0.1"}).console


async def test_the_console_is_404_when_off(grpc_server: ServeProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{grpc_server.health_port}/console/") as response,
    ):
        assert response.status == 404


# --- in a browser ---------------------------------------------------------------------


def chromium() -> str | None:
    """Debian's Chromium (or another system Chromium) on the PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = chromium()
    if executable is None:
        pytest.skip(
            "no Chromium on the PATH: the console's browser tests need one "
            "(`make browser` installs Debian's as root, or `apt-get install chromium`)"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the dev group: `make`)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any, console: Console) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    requests: list[str] = []
    opened.on("request", lambda request: requests.append(request.url))
    try:
        yield opened
    finally:
        await context.close()
    # Nothing but the console itself, and never a token in a URL.
    assert all(url.startswith("http://127.0.0.1:") for url in requests), requests
    for token in console.tokens.values():
        assert not any(token in url for url in requests)


async def sign_in(page: Any, console: Console, role: str) -> None:
    from playwright.async_api import expect

    await page.goto(console.url)
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#token", console.tokens[role])
    await page.click("#login button[type=submit]")
    await expect(page.locator("#who-name")).to_have_text(f"token {role}")


async def test_sign_in_then_see_a_stream_and_a_consumers_lag_move(
    console: Console, page: Any
) -> None:
    from playwright.async_api import expect

    await sign_in(page, console, "admin")
    row = page.locator(f'#streams tr[data-stream="{console.lagging}"]')
    await expect(row.locator("td.events")).to_have_text("0", timeout=SHOWN)
    for text in ("first", "second", "third"):
        await console.client.publish(f"{console.lagging}.a", StringValue(value=text))
    await expect(row.locator("td.events")).to_have_text("3", timeout=SHOWN)  # no reload

    await page.click(f'#streams a:text-is("{console.lagging}")')
    newest = page.locator("#events [data-event]").first
    await expect(newest.locator("pre.data")).to_have_text('"third"')

    await page.click('#nav a[data-section="consumers"]')
    lag = page.locator(f'#consumers tr[data-consumer="{console.lagging}/worker"] td.lag-events')
    await expect(lag).to_have_text("3", timeout=SHOWN)
    async with console.client.subscribe(console.lagging, "worker") as events:
        async for event in events:
            await event.ack()
            if event.unpack(StringValue).value == "third":
                break
    await expect(lag).to_have_text("0", timeout=SHOWN)
    chart = page.locator(f'.chart:has(h3:text-is("{console.lagging} / worker")) polyline.events')
    await expect(chart).to_have_count(1, timeout=SHOWN)


async def test_replay_a_dead_letter_and_see_it_processed(console: Console, page: Any) -> None:
    from playwright.async_api import expect

    letter = await _dead_letter(console, "poison")
    await sign_in(page, console, "admin")
    await page.goto(f"{console.url}#/dead-letters/{console.dead}")
    row = page.locator(f'#letters tr[data-letter="{letter}"]')
    await expect(row).to_contain_text("cannot handle poison")
    await row.locator("a").click()
    await expect(page.locator("pre.data")).to_have_text('"poison"')

    received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle() -> None:
        async with console.client.subscribe(console.handled, "handler") as events:
            async for event in events:
                await event.ack()
                if event.unpack(StringValue).value == "poison":
                    received.set_result(event.id)
                    return

    handler = asyncio.create_task(handle())
    try:
        await page.click("button.replay")
        await expect(page.locator("#status")).to_contain_text(f"Replayed letter {letter}")
        await expect(page.locator(f'#letters tr[data-letter="{letter}"]')).to_have_count(0)
        replayed = await asyncio.wait_for(received, 20)
    finally:
        handler.cancel()
    # Processed: the consumer's ack floor reaches the replayed event.
    await page.goto(f"{console.url}#/consumers")
    floor = page.locator(f'#consumers tr[data-consumer="{console.handled}/handler"] td.ack-floor')
    await expect(floor).to_have_text(str(replayed), timeout=SHOWN)


async def test_a_read_only_token_cannot_replay(console: Console, page: Any) -> None:
    from playwright.async_api import expect

    letter = await _dead_letter(console, "untouchable")
    await sign_in(page, console, "reader")
    await page.goto(f"{console.url}#/dead-letters/{console.dead}")
    await expect(page.locator(f'#letters tr[data-letter="{letter}"]')).to_be_visible()
    await expect(page.locator("#read-only")).to_be_visible()
    await expect(page.locator("button.replay")).to_have_count(0)
    await expect(page.locator("#purge")).to_have_count(0)
    # Nor by calling the API from the page with its token.
    status = await page.evaluate(
        """async ([path, token]) => (await fetch(path, {method: "POST", headers: {
            "X-Windshift-Console": "1", Authorization: "Bearer " + token}})).status""",
        [f"api/dead-letters/{console.dead}/{letter}/replay", console.tokens["reader"]],
    )
    assert status == 403
    await console.client.dead_letters(console.dead).get(letter)
    # Signing out forgets the token.
    await page.click("#sign-out")
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_state_key_its_value_and_history(console: Console, page: Any) -> None:
    from playwright.async_api import expect

    await sign_in(page, console, "reader")
    await page.click('#nav a[data-section="stores"]')
    await page.click(f'#stores a:text-is("{console.store}")')
    await page.click('#keys a:text-is("cart.1")')
    await expect(page.locator("#value pre")).to_have_text('"3 items"')
    await expect(page.locator("#history tbody tr")).to_have_count(3)


async def test_a_phone_sized_screen_shows_the_consumers(console: Console, browser: Any) -> None:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = await context.new_page()
        await sign_in(page, console, "admin")
        await page.click('#nav a[data-section="consumers"]')
        lag = page.locator(f'#consumers tr[data-consumer="{console.lagging}/worker"] td.lag-events')
        await expect(lag).to_be_visible(timeout=SHOWN)
        # Nothing wider than the screen but the tables' own scrolling boxes.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
    finally:
        await context.close()
