"""``windshift dead-letters list|show|replay|delete|purge DLQ_STREAM``: what ended up dead.

``replay`` and ``delete`` take one id (``17``), a range (``10-20``: the dead
letters with ids from 10 to 20 that are there), several of them separated by
commas (``3,7,10-20``), or ``--all``. Long work shows a progress bar on a
terminal (stderr) and ends with a summary; ``purge`` asks first unless
``--yes`` is given.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from google.protobuf.descriptor_pool import DescriptorPool
from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from windshift import _wire as wire
from windshift._cli._connection import NatsOptions, connection_options, with_client
from windshift._cli._output import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    Failure,
    JsonOption,
    Output,
    fields,
    iso,
    pretty_json,
    reports_failures,
    shown_bytes,
    shown_time,
    table,
    usage_error,
)
from windshift._cli._protos import load_pool
from windshift._cli._tail import ProtoOption
from windshift._client import Client
from windshift._deadletters import DeadLetter, DeadLetterQueue
from windshift.errors import NotFoundError, WindshiftError

app = typer.Typer(
    name="dead-letters",
    help="Dead letters: list, show, replay, delete and purge them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_LAST_ID = 2**64 - 1
_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
# Letters read per page while selecting a range or --all.
_PAGE = 500
# Past this many letters, replay and delete show a progress bar (on a terminal).
_PROGRESS_FROM = 2

QueueArgument = Annotated[
    str, typer.Argument(metavar="DLQ_STREAM", help="The dead-letter stream (e.g. orders-dead).")
]
IdsArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="[ID|FROM-TO,...]",
        help="A dead letter's id, a range of ids (10-20), or several separated by commas.",
        show_default=False,
    ),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter of the stream.")]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command works on: single ids, ranges, or all."""

    ids: tuple[int, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()
    every: bool = False

    def covers(self, letter_id: int) -> bool:
        return self.every or any(low <= letter_id <= high for low, high in self.ranges)


def parse_selection(text: str | None, every: bool) -> Selection:
    """``ID``, ``FROM-TO``, comma-separated, or ``--all`` (not both).

    Raises:
        Failure: (exit 2) nothing given, both given, or a part that is no id or range.
    """
    if every:
        if text is not None:
            raise usage_error(f"give ids ({text!r}) or --all, not both")
        return Selection(every=True)
    if text is None:
        raise usage_error("give a dead letter's id, a range (10-20) or --all")
    ids: list[int] = []
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        found = _PART.match(part.strip())
        if not found:
            raise usage_error(
                f"{part.strip()!r} is not a dead letter id or a range of them (10-20)"
            )
        low = int(found[1])
        high = int(found[2]) if found[2] is not None else None
        if low < 1 or low > _LAST_ID or (high is not None and not low <= high <= _LAST_ID):
            raise usage_error(f"{part.strip()!r} is not a range of ids from 1 up, low to high")
        if high is None:
            ids.append(low)
        else:
            ranges.append((low, high))
    return Selection(tuple(ids), tuple(ranges))


def letter_document(letter: DeadLetter, pool: DescriptorPool | None) -> dict[str, Any]:
    """A dead letter as ``--json`` shows it."""
    data = letter.to_json(pool)
    document: dict[str, Any] = {
        "id": letter.id,
        "subject": letter.subject,
        "stream": letter.stream,
        "consumer": letter.consumer,
        "event_id": letter.event_id,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "dead_since": iso(letter.dead_since),
        "time": iso(letter.timestamp),
        "type": letter.headers.get(wire.HEADER_DATA_TYPE) or None,
        "content_type": letter.headers.get(wire.HEADER_CONTENT_TYPE),
        "size": len(letter.body),
        "data": data,
    }
    if data is None and letter.body:
        document["data_base64"] = base64.b64encode(letter.body).decode()
    return document


async def _selected(queue: DeadLetterQueue, selection: Selection) -> tuple[list[int], list[int]]:
    """The ids of the letters selected that are there, and the single ids that are not."""
    found: list[int] = []
    missing: list[int] = []
    for letter_id in selection.ids:
        try:
            await queue.get(letter_id)
        except NotFoundError:
            missing.append(letter_id)
        else:
            found.append(letter_id)
    if selection.every or selection.ranges:
        starts = [0] if selection.every else [low - 1 for low, _ in selection.ranges]
        ends = [_LAST_ID] if selection.every else [high for _, high in selection.ranges]
        for after, end in zip(starts, ends, strict=True):
            while True:
                page = await queue.list(after_id=after, limit=_PAGE, max_bytes=4 * 1024 * 1024)
                inside = [letter.id for letter in page if letter.id <= end]
                found.extend(inside)
                if not page or len(inside) < len(page):
                    break
                after = page[-1].id
    return sorted(set(found)), missing


@dataclass
class _Outcome:
    done: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def code(self) -> int:
        if not self.failed:
            return 0
        if not self.done and all(failure["not_found"] for failure in self.failed):
            return EXIT_NOT_FOUND
        return EXIT_FAILED


def _progress(out: Output, total: int, verb: str) -> Progress:
    return Progress(
        TextColumn(f"{verb} dead letters"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out.errors,
        transient=False,
        disable=total < _PROGRESS_FROM or not out.errors.is_terminal,
    )


# The past tense and the -ing form of each action over letters, as shown.
_FORMS = {"replay": ("replayed", "replaying"), "delete": ("deleted", "deleting")}


async def _each(
    client: Client,
    out: Output,
    queue_name: str,
    selection: Selection,
    action: str,
    act: Callable[[DeadLetterQueue, int], Awaitable[dict[str, Any]]],
) -> int:
    """Apply ``act`` to each selected letter, with progress, then summarise; the exit code."""
    done_form, doing_form = _FORMS[action]
    queue = client.dead_letters(queue_name)
    await client.stream_info(queue_name)
    found, missing = await _selected(queue, selection)
    outcome = _Outcome(failed=[_not_found(queue_name, letter_id) for letter_id in missing])
    with _progress(out, len(found), doing_form) as progress:
        task = progress.add_task(action, total=len(found))
        for letter_id in found:
            try:
                outcome.done.append(await act(queue, letter_id))
            except WindshiftError as exc:
                outcome.failed.append(_failed(letter_id, exc))
            progress.advance(task)
    _summarise(out, outcome, done_form, queue_name)
    return outcome.code()


@app.command("list")
@reports_failures
@connection_options
def list_letters(
    queue_name: QueueArgument,
    *,
    after: Annotated[
        int, typer.Option("--after", min=0, metavar="ID", help="Only letters with a higher id.")
    ] = 0,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=10_000, help="At most this many letters.")
    ] = 100,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """List dead letters, oldest first: where each came from, its attempts and why."""
    out = Output(json_output=json_output)
    pool = load_pool(proto or [])

    async def work(client: Client) -> None:
        queue = client.dead_letters(queue_name)
        await client.stream_info(queue_name)  # a missing stream is "not found", not empty
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            page = await queue.list(
                after_id=letters[-1].id if letters else after,
                limit=min(_PAGE, limit - len(letters)),
                max_bytes=4 * 1024 * 1024,
            )
            if not page:
                break
            letters.extend(page)
        rows = (
            [
                letter.id,
                f"{letter.stream}/{letter.consumer}",
                letter.event_id,
                letter.subject,
                letter.attempts,
                shown_time(letter.dead_since),
                letter.reason,
            ]
            for letter in letters
        )
        columns = [
            "#Id",
            "Stream/consumer",
            "#Event",
            "Subject",
            "#Attempts",
            "Dead since",
            "Reason",
        ]
        out.result(
            [letter_document(letter, pool) for letter in letters],
            table(f"Dead letters of {queue_name}", columns, rows)
            if letters
            else f"no dead letters in {queue_name}",
        )

    with_client(nats, work, name="windshift dead-letters list")


@app.command("show")
@reports_failures
@connection_options
def show(
    queue_name: QueueArgument,
    letter_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The dead letter's id.")],
    *,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Show one dead letter in full: its origin, reason, headers and data."""
    out = Output(json_output=json_output)
    pool = load_pool(proto or [])

    async def work(client: Client) -> None:
        letter = await client.dead_letters(queue_name).get(letter_id)
        document = {**letter_document(letter, pool), "headers": dict(letter.headers)}
        data = document["data"]
        rows = [
            ("Dead letter", f"{letter.id} of {queue_name}"),
            ("From", f"event {letter.event_id} of {letter.stream}, consumer {letter.consumer}"),
            ("Subject", letter.subject),
            ("Attempts", letter.attempts),
            ("Reason", letter.reason),
            ("Dead since", shown_time(letter.dead_since)),
            ("Published", shown_time(letter.timestamp)),
            ("Type", document["type"] or "(no type)"),
            ("Size", shown_bytes(document["size"])),
            ("Headers", pretty_json(document["headers"])),
            (
                "Data",
                pretty_json(data)
                if data is not None
                else "(data of an unknown type: give its --proto to see it)",
            ),
        ]
        out.result(document, fields(None, rows))

    with_client(nats, work, name="windshift dead-letters show")


@app.command("replay")
@reports_failures
@connection_options
def replay(
    queue_name: QueueArgument,
    ids: IdsArgument = None,
    *,
    every: AllOption = False,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Publish dead letters again to their original subjects, then remove them.

    Ends with a summary; exit 0 when every one was replayed, 3 when none of
    the ids given is there, 1 when some failed.
    """
    out = Output(json_output=json_output)
    selection = parse_selection(ids, every)

    async def replay_one(queue: DeadLetterQueue, letter_id: int) -> dict[str, Any]:
        published = await queue.replay(letter_id)
        return {"id": letter_id, "stream": published.stream, "event_id": published.id}

    async def work(client: Client) -> int:
        return await _each(client, out, queue_name, selection, "replay", replay_one)

    code = with_client(nats, work, name="windshift dead-letters replay")
    raise typer.Exit(code)


@app.command("delete")
@reports_failures
@connection_options
def delete(
    queue_name: QueueArgument,
    ids: IdsArgument = None,
    *,
    every: AllOption = False,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Remove dead letters without replaying them (exit codes as replay's)."""
    out = Output(json_output=json_output)
    selection = parse_selection(ids, every)

    async def delete_one(queue: DeadLetterQueue, letter_id: int) -> dict[str, Any]:
        await queue.delete(letter_id)
        return {"id": letter_id}

    async def work(client: Client) -> int:
        return await _each(client, out, queue_name, selection, "delete", delete_one)

    code = with_client(nats, work, name="windshift dead-letters delete")
    raise typer.Exit(code)


@app.command("purge")
@reports_failures
@connection_options
def purge(
    queue_name: QueueArgument,
    *,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Remove every dead letter of the stream; asks first unless --yes is given."""
    out = Output(json_output=json_output)
    if not yes and not sys.stdin.isatty():
        raise usage_error("purge asks first: give --yes when stdin is not a terminal")

    async def count(client: Client) -> int:
        return (await client.stream_info(queue_name)).events

    async def work(client: Client) -> int:
        return await client.dead_letters(queue_name).purge()

    if not yes:
        held = with_client(nats, count, name="windshift dead-letters purge")
        if not typer.confirm(f"Remove all {held} dead letters of {queue_name}?", default=False):
            raise Failure(EXIT_FAILED, f"nothing purged: {queue_name} is as it was")
    purged = with_client(nats, work, name="windshift dead-letters purge")
    out.result(
        {"stream": queue_name, "purged": purged},
        f"purged {purged} dead letters of {queue_name}",
    )


def _not_found(queue_name: str, letter_id: int) -> dict[str, Any]:
    return {
        "id": letter_id,
        "error": f"dead letter {letter_id} is not in {queue_name!r}",
        "not_found": True,
    }


def _failed(letter_id: int, exc: WindshiftError) -> dict[str, Any]:
    return {"id": letter_id, "error": str(exc), "not_found": isinstance(exc, NotFoundError)}


def _summarise(out: Output, outcome: _Outcome, verb: str, queue_name: str) -> None:
    summary = f"{verb} {len(outcome.done)} dead letters of {queue_name}"
    if outcome.failed:
        summary += f", {len(outcome.failed)} failed"
    lines = [Text(summary, style="bold")]
    lines += [
        Text(f"  {failure['id']}: {failure['error']}", style="red") for failure in outcome.failed
    ]
    if verb == "replayed" and outcome.done:
        lines += [
            Text(f"  {done['id']} -> event {done['event_id']} of {done['stream']}")
            for done in outcome.done[:20]
        ]
        if len(outcome.done) > 20:
            lines.append(Text(f"  ... and {len(outcome.done) - 20} more"))
    out.result(
        {
            "stream": queue_name,
            verb: outcome.done,
            "failed": outcome.failed,
        },
        Group(*lines),
    )


__all__ = ["Selection", "app", "letter_document", "parse_selection"]
