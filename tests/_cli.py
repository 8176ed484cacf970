"""Helpers of the tests of the ``windshift`` command: real child processes of the console script.

:class:`RunProcess` is one long-running ``windshift ...`` (``windshift run``),
its stderr (the log) and stdout collected line by line, optionally on a
pseudo-terminal that is its controlling terminal; :func:`run_windshift` runs
a command to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from windshift import EmbeddedNats

STOP_TIMEOUT = 30.0

# The SGR sequences (colours, bold) that rich writes on a terminal.
_STYLES = re.compile(r"\x1b\[[0-9;]*m")

# The command's own variables: none passes from the developer's environment
# to the tests' processes (each test says what it sets).
OWN_VARIABLES = frozenset(
    {
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_NKEY_SEED",
        "NATS_TLS_CA",
        "NATS_TLS_CERT",
        "NATS_TLS_KEY",
        "WINDSHIFT_LOG_LEVEL",
        "WINDSHIFT_LOG_FORMAT",
    }
)

# Make the terminal on stdin the controlling terminal of this new session,
# then become the command in argv[1:].
_ON_TERMINAL = """\
import fcntl, os, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
os.execv(sys.argv[1], sys.argv[1:])
"""


def windshift_command() -> str:
    """The installed ``windshift`` console script, as a user would run it."""
    script = Path(sys.executable).parent / "windshift"
    assert script.exists(), "windshift is not installed (make .venv/bin/.installed)"
    return str(script)


def run_env(**overrides: str) -> dict[str, str]:
    """Our environment without the command's own variables (nor OTEL_*), plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in OWN_VARIABLES and not key.startswith("OTEL_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


class RunProcess:
    """One ``windshift run`` child process; its stderr (the log) and stdout, line by line.

    With ``terminal``, a pseudo-terminal is its stdin, stdout, stderr and
    controlling terminal (what it writes there becomes :attr:`lines`), and
    :meth:`ctrl_c` types ^C.
    """

    def __init__(
        self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str], terminal: bool = False
    ) -> None:
        self.args = list(args)
        self.cwd = cwd
        self.env = dict(env)
        self.terminal = terminal
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []
        self._master = -1
        #: everything written on the terminal so far, also a line not ended yet (a prompt)
        self.screen = ""
        self._screen_changed = asyncio.Event()

    @property
    def log(self) -> str:
        return "\n".join([*self.lines, "-- stdout:", *self.stdout])

    async def start(self) -> None:
        if not self.terminal:
            self.process = await asyncio.create_subprocess_exec(
                windshift_command(),
                *self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert self.process.stdout is not None and self.process.stderr is not None
            self._readers = [
                asyncio.create_task(self._collect(self.process.stderr, self.lines)),
                asyncio.create_task(self._collect(self.process.stdout, self.stdout)),
            ]
            return
        master, device = os.openpty()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ON_TERMINAL,
                windshift_command(),
                *self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=device,
                stdout=device,
                stderr=device,
                start_new_session=True,
            )
        finally:
            os.close(device)
        self._master = master
        output = asyncio.StreamReader()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last process on the terminal has gone
                data = b""
            if data:
                output.feed_data(data.replace(b"\r\n", b"\n"))
                self.screen += _STYLES.sub("", data.decode(errors="replace"))
                self._screen_changed.set()
            else:
                loop.remove_reader(master)
                output.feed_eof()

        loop.add_reader(master, readable)
        self._readers = [asyncio.create_task(self._collect(output, self.lines))]

    async def _collect(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while True:
            line = await stream.readline()
            async with self._changed:
                if line:
                    text = line.decode(errors="replace").rstrip("\n")
                    # What a terminal shows: without its colour and style codes.
                    into.append(_STYLES.sub("", text) if self.terminal else text)
                self._changed.notify_all()
            if not line:
                return

    async def wait_for_lines(
        self, pattern: str, count: int = 1, *, stdout: bool = False, timeout: float = 20.0
    ) -> list[str]:
        """The first ``count`` lines matching ``pattern`` (a regex), of the log or stdout."""
        regex = re.compile(pattern)
        lines = self.stdout if stdout else self.lines

        async def wait() -> list[str]:
            async with self._changed:
                while len(found := [line for line in lines if regex.search(line)]) < count:
                    if all(reader.done() for reader in self._readers):
                        raise AssertionError(
                            f"exited with {len(found)} of {count} lines matching {pattern!r}:\n"
                            f"{self.log}"
                        )
                    await self._changed.wait()
                return found[:count]

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {count} lines matching {pattern!r}:\n{self.log}") from None

    async def wait_for_line(self, pattern: str, *, stdout: bool = False) -> str:
        return (await self.wait_for_lines(pattern, stdout=stdout))[0]

    async def wait_for_screen(self, text: str, *, timeout: float = 20.0) -> None:
        """Wait until ``text`` is on the terminal, a prompt not ended by a newline included."""

        async def wait() -> None:
            while text not in self.screen:
                self._screen_changed.clear()
                await self._screen_changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{text!r} is not on the terminal:\n{self.screen}") from None

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def ctrl_c(self) -> None:
        """Type ^C on the terminal: SIGINT to its foreground process group."""
        os.write(self._master, b"\x03")

    def type(self, text: str) -> None:
        """Type ``text`` on the terminal (an answer to a prompt)."""
        os.write(self._master, text.encode())

    async def exited(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit (within ``timeout`` seconds); its exit code."""
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"still running after {timeout}s:\n{self.log}") from None
        await asyncio.wait_for(asyncio.gather(*self._readers), 10)
        return code

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()
        if self._master >= 0:
            with contextlib.suppress(ValueError):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = -1


Start = Callable[..., Coroutine[Any, Any, RunProcess]]


@pytest.fixture
async def start_windshift(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[Start]:
    """Start ``windshift ARGS`` as a child process on the session's nats-server.

    Import it into a test module to use it; the processes are killed at the end.
    """
    started: list[RunProcess] = []

    async def start(*args: str, terminal: bool = False) -> RunProcess:
        process = RunProcess(
            args, cwd=tmp_path, env=run_env(NATS_URL=nats_server.url), terminal=terminal
        )
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        await process.close()


async def run_windshift(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``windshift ARGS`` to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        windshift_command(),
        *args,
        cwd=cwd,
        env=dict(run_env() if env is None else env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_in_process(*args: str) -> tuple[int, str, str]:
    """Run ``windshift ARGS`` in this process (in a thread, as it runs its own event loop).

    Its exit code, and what it wrote on stdout and stderr. Quicker than a
    child process; for what needs no signal, terminal or environment.
    """
    from windshift._cli._app import run_app

    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return run_app(list(args))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


def json_lines(lines: Sequence[str]) -> list[dict[str, object]]:
    """Every line parsed as one JSON object (fails on a line that is not one)."""
    return [json.loads(line) for line in lines if line.strip()]
