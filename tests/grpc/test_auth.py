"""API authentication and authorization: bearer tokens and their permissions.

The tokens file on its own (loading, patterns, hashing), then a real
``windshift-grpc serve`` that requires tokens, called through real channels:
every RPC is refused without a token (UNAUTHENTICATED) and with one lacking
the permission (PERMISSION_DENIED), and allowed with the right one; each
message of an Events call is checked; tokens never reach the logs; and the
start-up rules for a server without a tokens file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import windshift
from tests.grpc_fixtures import (
    EventsClient,
    ServeProcess,
    StartServe,
    run_command,
    serve_command,
    serve_env,
    string_any,
    unpack_text,
)
from windshift import EmbeddedNats
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc
from windshift_grpc.auth import (
    AuthenticationError,
    Grant,
    Permission,
    PermissionDeniedError,
    Tokens,
    bearer,
    covers,
    digest,
    hashed,
    internal_stream,
    internal_subject,
    matches,
    weakness,
)
from windshift_grpc.permissions import EVENTS_METHOD, KNOWN_TOKENS, RULES, Access
from windshift_grpc.settings import Settings, SettingsError
from windshift_grpc.status import status_for

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )
    from windshift_grpc._proto.windshift.state.v1alpha1.service_pb2_grpc import (
        StateServiceAsyncStub as StateStub,
    )

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def new_token() -> str:
    return secrets.token_urlsafe(24)


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def write_tokens(path: Path, document: dict[str, Any] | str) -> Path:
    """Write a tokens file only its owner may read (as one holding plain tokens must be)."""
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    path.chmod(0o600)
    return path


async def run_serve(env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    """Run ``windshift-grpc serve`` to its end (for settings that stop it at once)."""
    return await run_command(*serve_command(), env=env, timeout=timeout)


# --- patterns, the tokens file, bearer metadata ---------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("orders", "orders", True),
        ("orders", "orders2", False),
        ("*", "orders", True),
        (">", "orders", True),
        ("orders.*", "orders.created", True),
        ("orders.*", "orders.created.eu", False),
        ("orders.*", "orders", False),
        ("orders.>", "orders.created.eu", True),
        ("orders.>", "orders", False),
        ("*.created", "orders.created", True),
        ("*.created", "orders.deleted", False),
        ("orders.created", "orders.created", True),
        ("orders.created", "orders.*", False),
    ],
)
def test_patterns_match_like_nats_subjects(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "subject_filter", "expected"),
    [
        ("orders.>", "orders.created", True),
        ("orders.>", "orders.*", True),
        ("orders.>", "orders.>", True),
        ("orders.>", "orders.*.eu", True),
        ("orders.>", "orders", False),
        ("orders.*", "orders.created", True),
        ("orders.*", "orders.*", True),
        ("orders.*", "orders.>", False),  # '>' also matches orders.a.b
        ("orders.*", "orders.*.eu", False),
        ("orders.*.>", "orders.>", False),  # '>' also matches orders.a
        ("orders.*.>", "orders.*.*", True),
        ("orders.created", "orders.*", False),
        ("orders.created", "orders.created", True),
        ("*.created", "orders.created", True),
        ("*.created", "*.created", True),
        ("*.created", "*.*", False),
        (">", ">", True),
        (">", "*", True),
        ("*", ">", False),
        ("*", "*", True),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
        ("payments.>", "orders.>", False),
    ],
)
def test_a_pattern_covers_a_filter_when_it_matches_every_subject_the_filter_does(
    pattern: str, subject_filter: str, expected: bool
) -> None:
    assert covers(pattern, subject_filter) is expected
    if "*" not in subject_filter and ">" not in subject_filter:  # a subject: the same as matches
        assert covers(pattern, subject_filter) is matches(pattern, subject_filter)


def test_internal_streams_and_subjects() -> None:
    assert internal_stream("KV_carts") and internal_stream("OBJ_files")
    assert not internal_stream("orders") and not internal_stream("kv_carts")
    for subject in ("$JS.API.STREAM.NAMES", "$KV.carts.k", "$SYS.>", "_INBOX.>", "_INBOX.a.b"):
        assert internal_subject(subject), subject
    for subject in (">", "*.created", "*.*.*", "_R_.x", "_GR_.x.y"):
        assert internal_subject(subject), subject
    for subject in ("orders.>", "orders.*.created", "o_INBOX.x", "INBOX.x"):
        assert not internal_subject(subject), subject


def test_no_pattern_reaches_the_streams_of_stores_or_the_subjects_of_nats() -> None:
    everything = {permission: ("*", ">") for permission in Permission}
    grant = Grant(name="root", credential="x", permissions=everything)
    assert grant.allows(Permission.MANAGE, "orders")
    assert grant.allows(Permission.PUBLISH, "orders.created")
    assert grant.allows(Permission.READ_STATE, "carts")
    for permission in (Permission.CONSUME, Permission.MANAGE):
        assert not grant.allows(permission, "KV_carts")
        assert not grant.allows(permission, "OBJ_files")
        with pytest.raises(PermissionDeniedError, match="only read_state and write_state"):
            grant.require(permission, "KV_carts")
    for subject in ("_INBOX.abc.def", "_INBOX.>", "*.created", ">"):
        assert not grant.allows(Permission.PUBLISH, subject), subject
    with pytest.raises(PermissionDeniedError, match="subjects NATS keeps for itself"):
        grant.require(Permission.PUBLISH, "_INBOX.>")
    narrow = Grant(name="n", credential="y", permissions={Permission.PUBLISH: ("orders.*",)})
    with pytest.raises(PermissionDeniedError, match="covers them all"):
        narrow.require(Permission.PUBLISH, "orders.>")


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("short", "16 characters"),
        ("a" * 40, "10 different characters"),
        ("abababababababababab", "10 different characters"),
        ("0123456780123456", "10 different characters"),
        (" " + secrets.token_urlsafe(20), "surrounding spaces"),
        (secrets.token_urlsafe(32), None),
        (secrets.token_hex(16), None),
        ("correct-horse-battery-staple", None),
    ],
    # (named, not shown: the random tokens differ in each process that collects them)
    ids=["short", "one-char", "two-chars", "ten-digits", "spaces", "urlsafe", "hex", "words"],
)
def test_a_weak_token_is_named_why(token: str, why: str | None) -> None:
    found = weakness(token)
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found


async def test_a_tokens_file_in_json_and_in_toml(tmp_path: Path) -> None:
    plain, other = new_token(), new_token()
    as_json = write_tokens(
        tmp_path / "tokens.json",
        {
            "tokens": [
                {
                    "name": "orders-service",
                    "token": hashed(plain),
                    "publish": ["orders.>"],
                    "consume": ["orders"],
                    "manage": ["orders"],
                    "read_state": ["carts"],
                    "write_state": ["carts"],
                    "max_streams": 3,
                    "max_consumers": 0,
                },
                {"name": "nobody", "token": other},
            ]
        },
    )
    as_toml = write_tokens(
        tmp_path / "tokens.toml",
        f"""
[[tokens]]
name = "orders-service"
token = "{hashed(plain)}"
publish = ["orders.>"]
consume = ["orders"]
manage = ["orders"]
read_state = ["carts"]
write_state = ["carts"]
max_streams = 3
max_consumers = 0

[[tokens]]
name = "nobody"
token = "{other}"
""",
    )
    for path in (as_json, as_toml):
        tokens = Tokens.load(path)
        assert len(tokens) == 2
        access = Access(tokens)
        grant = access.grant(await access.authenticate(metadata(plain)))
        assert grant.name == "orders-service"
        assert (grant.max_streams, grant.max_consumers) == (3, 0)
        assert grant.allows(Permission.PUBLISH, "orders.created")
        assert not grant.allows(Permission.PUBLISH, "payments.created")
        assert grant.allows(Permission.CONSUME, "orders")
        assert grant.allows(Permission.MANAGE, "orders")
        assert grant.allows(Permission.READ_STATE, "carts")
        assert grant.allows(Permission.WRITE_STATE, "carts")
        assert not grant.allows(Permission.WRITE_STATE, "orders")
        with pytest.raises(PermissionDeniedError, match="'orders-service' may not consume"):
            grant.require(Permission.CONSUME, "payments")
        nobody = access.grant(await access.authenticate(metadata(other)))
        assert nobody.name == "nobody"
        assert (nobody.max_streams, nobody.max_consumers) == (None, None)
        assert not any(nobody.allows(permission, "orders") for permission in Permission)
        # What is kept is the hash; the repr shows no secret.
        assert plain not in repr(grant) and grant.credential not in repr(grant)
        assert other not in repr(nobody) and digest(other).hex() not in repr(nobody)
        with pytest.raises(AuthenticationError, match="not valid"):
            await access.authenticate(metadata(new_token()))


def test_a_hashed_token_is_salted_scrypt_and_the_sha256_form_is_still_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = new_token()
    first, second = hashed(token), hashed(token)
    assert first.startswith("scrypt:n=32768,r=8,p=1:")
    assert first != second  # salted
    assert token not in first
    legacy = "sha256:" + digest(token).hex()  # `printf %s "$TOKEN" | sha256sum`
    for stored in (first, second, legacy):
        path = write_tokens(tmp_path / "tokens.json", {"tokens": [{"name": "a", "token": stored}]})
        with caplog.at_level(logging.WARNING, "windshift_grpc.auth"):
            caplog.clear()
            tokens = Tokens.load(path)
        credential = tokens.credential_of(token)
        assert credential is not None
        grant = tokens.get(credential)
        assert grant is not None and grant.name == "a"
        assert tokens.credential_of(new_token()) is None
        deprecated = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
        if stored is legacy:
            assert len(deprecated) == 1 and "'a'" in deprecated[0]
            assert "windshift-grpc token --hash" in deprecated[0]
        else:
            assert deprecated == []
    # The cost of a hash in the file is bounded (a bad one must not stall the server).
    path = write_tokens(
        tmp_path / "costly.json",
        {"tokens": [{"name": "a", "token": first.replace("n=32768", "n=4194304")}]},
    )
    with pytest.raises(SettingsError, match="out of range"):
        Tokens.load(path)


async def test_a_token_is_checked_against_the_file_once_per_process() -> None:
    good, bad = new_token(), new_token()
    tokens = Tokens(
        [Grant(name="a", credential=hashed(good), permissions={Permission.CONSUME: ("x",)})]
    )
    access = Access(tokens)
    assert tokens.slow
    credentials = await asyncio.gather(*(access.authenticate(metadata(good)) for _ in range(5)))
    assert len(set(credentials)) == 1
    assert access.grant(credentials[0]).name == "a"
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await access.authenticate(metadata(bad))
    assert access.verifications == 2  # one scrypt check each; the rest came from the caches
    # A reload forgets the refused tokens (one may be in the new file), not the good ones.
    access.reload(
        Tokens(
            [
                Grant(name="a", credential=tokens.grants[0].credential, permissions={}),
                Grant(name="b", credential=hashed(bad), permissions={}),
            ]
        )
    )
    assert access.grant(await access.authenticate(metadata(good))).name == "a"
    assert access.grant(await access.authenticate(metadata(bad))).name == "b"
    assert access.verifications == 3
    assert KNOWN_TOKENS >= 1000


@pytest.mark.parametrize(
    ("mode", "plain", "outcome"),
    [
        (0o600, True, "silent"),
        (0o400, True, "silent"),
        (0o640, True, "refused"),
        (0o644, True, "refused"),
        (0o644, False, "warned"),
        (0o604, False, "warned"),
        (0o660, False, "refused"),
        (0o602, False, "refused"),
        (0o600, False, "silent"),
    ],
)
def test_a_tokens_file_others_may_access(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, plain: bool, outcome: str
) -> None:
    token = new_token()
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"tokens": [{"name": "a", "token": token if plain else hashed(token)}]})
    )
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, "windshift_grpc.auth"):
        if outcome == "refused":
            with pytest.raises(SettingsError) as refused:
                Tokens.load(path)
            assert refused.value.name == "WINDSHIFT_AUTH_FILE"
            assert f"mode {mode:04o}" in str(refused.value) and "chmod 600" in str(refused.value)
            assert token not in str(refused.value)
        else:
            assert len(Tokens.load(path)) == 1
    warned = [
        r.getMessage() for r in caplog.records if "may be read by other users" in r.getMessage()
    ]
    assert len(warned) == (outcome == "warned")


async def test_the_token_command_makes_a_token_and_its_hash(tmp_path: Path) -> None:
    env = serve_env(None)
    command = serve_command()[0]
    process = await asyncio.create_subprocess_exec(
        command, "token", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    token_line, hash_line = out.decode().splitlines()
    token = token_line.removeprefix("token:").strip()
    assert len(token) >= 40 and weakness(token) is None
    made = hash_line.removeprefix("hashed:").strip()
    assert made.startswith("scrypt:")

    async def hash_of(text: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            command,
            "token",
            "--hash",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(text.encode())
        assert process.returncode is not None
        return process.returncode, out.decode().strip(), err.decode().strip()

    code, rehashed, _ = await hash_of(f"{token}\n")
    assert code == 0
    for stored in (made, rehashed):
        path = write_tokens(tmp_path / "t.json", {"tokens": [{"name": "a", "token": stored}]})
        assert Tokens.load(path).credential_of(token) is not None
    code, printed, err = await hash_of("aaaaaaaaaaaaaaaaaaaaaaaa\n")
    assert (code, printed) == (2, "")
    assert err == "windshift-grpc: the token is too weak: it needs 10 different characters or more"


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ("not json", "not valid JSON"),
        ("[]", 'one key, "tokens"'),
        ('{"tokens": []}', "at least one token"),
        ('{"tokens": [{"token": "%(t)s"}]}', "needs a name"),
        ('{"tokens": [{"name": "a"}]}', 'needs a "token"'),
        ('{"tokens": [{"name": "a", "token": "short"}]}', "too weak: it needs 16 characters"),
        ('{"tokens": [{"name": "a", "token": "%(t)s "}]}', "too weak: it has surrounding spaces"),
        (
            '{"tokens": [{"name": "a", "token": "xyxyxyxyxyxyxyxyxyxy"}]}',
            "too weak: it needs 10 different characters",
        ),
        ('{"tokens": [{"name": "a", "token": "sha256:abc"}]}', "64 hex digits"),
        ('{"tokens": [{"name": "a", "token": "scrypt:n=1024:ab:cd"}]}', "scrypt:n=<N>"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "max_streams": -1}]}', "max_streams must"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "max_consumers": true}]}', "0 or more"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "consume": ["KV_carts"]}]}', "read_state"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "manage": ["OBJ_x"]}]}', "object store"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "publish": ["_INBOX.>"]}]}', "for itself"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "publish": ["$KV.x.>"]}]}', "for itself"),
        (
            '{"tokens": [{"name": "a", "token": "%(t)s"}, {"name": "a", "token": "%(u)s"}]}',
            "listed twice",
        ),
        (
            '{"tokens": [{"name": "a", "token": "%(t)s"}, {"name": "b", "token": "%(t)s"}]}',
            "same token as another",
        ),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "admin": true}]}', "unknown key 'admin'"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "publish": "x.>"}]}', "must be a list"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "publish": ["x.>.y"]}]}', "not a valid"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "publish": ["x..y"]}]}', "not a valid"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "consume": ["x.>"]}]}', "not a stream"),
        ('{"tokens": [{"name": "a", "token": "%(t)s", "read_state": ["a b"]}]}', "not a valid"),
    ],
)
def test_a_bad_tokens_file_is_one_error_naming_the_setting_and_never_the_token(
    tmp_path: Path, document: str, complaint: str
) -> None:
    token, other = new_token(), new_token()
    path = tmp_path / "tokens.json"
    path.write_text(document % {"t": token, "u": other} if "%(" in document else document)
    with pytest.raises(SettingsError) as error:
        Tokens.load(path)
    message = str(error.value)
    assert error.value.name == "WINDSHIFT_AUTH_FILE"
    assert complaint in message
    assert "\n" not in message
    assert token not in message and other not in message
    with pytest.raises(SettingsError, match="cannot read"):
        Tokens.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([], "no bearer token"),
        ([("authorization", "Basic dXNlcjpwdw==")], "must be 'Bearer <token>'"),
        ([("authorization", "Bearer ")], "must be 'Bearer <token>'"),
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], "more than one"),
    ],
)
def test_bearer_metadata(entries: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(AuthenticationError, match=problem):
        bearer(entries)
    assert bearer([("Authorization", "bearer  the-token ")]) == "the-token"


def test_the_status_table_has_the_access_errors() -> None:
    assert status_for(AuthenticationError("no token")) == (UNAUTHENTICATED, "no token")
    assert status_for(PermissionDeniedError("no")) == (PERMISSION_DENIED, "no")


def test_every_rpc_of_both_services_has_a_rule() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (pb, state_pb)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(RULES) | {EVENTS_METHOD}


# --- which servers start without a tokens file ----------------------------------


def test_settings_without_a_tokens_file() -> None:
    production = {"NATS_URL": "nats://nats:4222"}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(production)
    assert refused.value.name == "WINDSHIFT_AUTH_FILE"
    assert "WINDSHIFT_AUTH=none" in str(refused.value)
    assert Settings.from_env({}).open_api_reason == "embedded NATS, NATS_URL is unset"
    assert (
        Settings.from_env({**production, "DEVELOPMENT": "true"}).open_api_reason
        == "DEVELOPMENT=true"
    )
    assert (
        Settings.from_env({**production, "WINDSHIFT_AUTH": "none"}).open_api_reason
        == "WINDSHIFT_AUTH=none"
    )
    with pytest.raises(SettingsError, match="WINDSHIFT_AUTH: 'maybe' is not one of"):
        Settings.from_env({"WINDSHIFT_AUTH": "maybe"})


def test_settings_with_a_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "a", "token": new_token()}]}))
    settings = Settings.from_env({"NATS_URL": "nats://nats:4222", "WINDSHIFT_AUTH_FILE": str(path)})
    assert settings.auth_file == path
    assert settings.open_api_reason is None
    with pytest.raises(SettingsError, match="'none' contradicts WINDSHIFT_AUTH_FILE"):
        Settings.from_env({"WINDSHIFT_AUTH_FILE": str(path), "WINDSHIFT_AUTH": "none"})
    with pytest.raises(SettingsError, match=r"WINDSHIFT_AUTH_FILE: .* is not a file"):
        Settings.from_env({"WINDSHIFT_AUTH_FILE": str(tmp_path / "missing.json")})


async def test_a_production_server_without_tokens_refuses_to_start(
    nats_server: EmbeddedNats,
) -> None:
    env = serve_env(nats_server.url, WINDSHIFT_AUTH=None)
    code, out, err = await run_serve(env)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("windshift-grpc: invalid WINDSHIFT_AUTH_FILE: not set")
    assert "WINDSHIFT_AUTH=none" in lines[0]
    assert out == ""


async def test_a_bad_tokens_file_stops_serve_with_one_line(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    token = new_token()
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "ci", "token": token, "publish": "x"}]}))
    code, out, err = await run_serve(serve_env(nats_server.url, WINDSHIFT_AUTH_FILE=str(path)))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "WINDSHIFT_AUTH_FILE" in lines[0] and "'ci'" in lines[0]
    assert token not in err + out


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"DEVELOPMENT": "true"}, "DEVELOPMENT=true"),
        ({"WINDSHIFT_AUTH": "none"}, "WINDSHIFT_AUTH=none"),
        ({"NATS_URL": None}, "NATS_URL is unset"),  # `make serve` on a fresh clone
    ],
    ids=["development", "opt-out", "embedded"],
)
async def test_an_open_api_is_announced_loudly(
    start_serve: StartServe, tmp_path: Path, env: dict[str, str | None], reason: str, name: str
) -> None:
    settings: dict[str, str | None] = {"WINDSHIFT_AUTH": None, **env}
    server = await start_serve(WINDSHIFT_DATA_DIR=str(tmp_path / "data"), **settings)
    warning = await server.wait_for_line("API AUTHENTICATION IS OFF")
    assert reason in warning
    assert "WARN" in warning.upper()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await stub.EnsureStream(
            pb.EnsureStreamRequest(
                name=name, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{name}.>"])
            )
        )


# --- a server that requires tokens ----------------------------------------------


@dataclass
class Secured:
    """A serve process requiring tokens, the tokens, and names they are scoped to."""

    server: ServeProcess
    tokens_file: Path
    admin: str
    limited: str  # everything on the "allowed" names, nothing else; stored hashed
    reader: str  # read_state and consume on the allowed names only
    nobody: str  # a valid token without any permission
    allowed: str  # a stream (subjects allowed.>), and a store of the same name
    denied: str
    mirror: str  # a stream name "limited" may manage

    def all_tokens(self) -> list[str]:
        return [self.admin, self.limited, self.reader, self.nobody]


def _dead(stream: str) -> str:
    """The dead-letter stream of ``stream``; the tokens grant on it what they grant on that."""
    return f"{stream}dead"


@pytest.fixture(scope="module")
async def secured(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Secured]:
    prefix = f"auth{os.getpid()}"
    allowed, denied, mirror = f"{prefix}ok", f"{prefix}no", f"{prefix}okmirror"
    admin, limited, reader, nobody = new_token(), new_token(), new_token(), new_token()
    everything = [">"]
    path = write_tokens(
        tmp_path_factory.mktemp("auth") / "tokens.json",
        (
            {
                "tokens": [
                    {
                        "name": "admin",
                        "token": admin,
                        **{permission.value: everything for permission in Permission},
                    },
                    {
                        "name": "limited",
                        "token": hashed(limited),
                        # its dead-letter stream collects <name>.>: managing it needs that
                        "publish": [f"{allowed}.>", f"{_dead(allowed)}.>"],
                        "consume": [allowed, _dead(allowed)],
                        "manage": [allowed, mirror, _dead(allowed)],
                        "read_state": [allowed],
                        "write_state": [allowed],
                    },
                    {
                        "name": "reader",
                        "token": reader,
                        "consume": [allowed, _dead(allowed)],
                        "read_state": [allowed],
                    },
                    {"name": "nobody", "token": nobody},
                ]
            }
        ),
    )
    server = ServeProcess(serve_env(nats_server.url, WINDSHIFT_AUTH_FILE=str(path)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
            state: StateStub = state_grpc.StateServiceStub(channel)  # type: ignore[assignment]
            as_admin = metadata(admin)
            for stream in (allowed, denied):
                await stub.EnsureStream(
                    pb.EnsureStreamRequest(
                        name=stream,
                        subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{stream}.>"]),
                    ),
                    metadata=as_admin,
                )
                await state.EnsureStore(
                    state_pb.EnsureStoreRequest(store=stream), metadata=as_admin
                )
        yield Secured(server, path, admin, limited, reader, nobody, allowed, denied, mirror)
    finally:
        await server.stop()


@pytest.fixture
async def secured_channel(secured: Secured) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(secured.server.target) as channel:
        yield channel


Call = Callable[[grpc.aio.Channel, str, list[tuple[str, str]] | None], Awaitable[Any]]


def _events(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.EventsServiceStub(channel)  # type: ignore[return-value]


def _state(channel: grpc.aio.Channel) -> StateStub:
    return state_grpc.StateServiceStub(channel)  # type: ignore[return-value]


def _value(text: str) -> AnyProto:
    data = AnyProto()
    data.Pack(StringValue(value=text))
    return data


# One request per unary RPC, on the stream/store `target` (names follow it).
UNARY: dict[str, Call] = {
    "EnsureStream": lambda ch, target, md: _events(ch).EnsureStream(
        pb.EnsureStreamRequest(
            name=target, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{target}.>"])
        ),
        metadata=md,
    ),
    "EnsureConsumer": lambda ch, target, md: _events(ch).EnsureConsumer(
        pb.EnsureConsumerRequest(stream=target, name="guarded", subjects=[f"{target}.>"]),
        metadata=md,
    ),
    "DeleteConsumer": lambda ch, target, md: _events(ch).DeleteConsumer(
        pb.DeleteConsumerRequest(stream=target, id="to-delete"), metadata=md
    ),
    "PublishEvent": lambda ch, target, md: _events(ch).PublishEvent(
        pb.PublishEventRequest(subject=f"{target}.created", data=string_any("x")), metadata=md
    ),
    "PublishEvents": lambda ch, target, md: _events(ch).PublishEvents(
        pb.PublishEventsRequest(
            events=[pb.PublishEventRequest(subject=f"{target}.created", data=string_any("x"))]
        ),
        metadata=md,
    ),
    "ListDeadLetters": lambda ch, target, md: _events(ch).ListDeadLetters(
        pb.ListDeadLettersRequest(dead_letter_stream=_dead(target)), metadata=md
    ),
    "GetDeadLetter": lambda ch, target, md: _events(ch).GetDeadLetter(
        pb.GetDeadLetterRequest(dead_letter_stream=_dead(target), id=_letter(target)),
        metadata=md,
    ),
    "ReplayDeadLetter": lambda ch, target, md: _events(ch).ReplayDeadLetter(
        pb.ReplayDeadLetterRequest(dead_letter_stream=_dead(target), id=_letter(target)),
        metadata=md,
    ),
    "DeleteDeadLetter": lambda ch, target, md: _events(ch).DeleteDeadLetter(
        pb.DeleteDeadLetterRequest(dead_letter_stream=_dead(target), id=_letter(target)),
        metadata=md,
    ),
    "PurgeDeadLetters": lambda ch, target, md: _events(ch).PurgeDeadLetters(
        pb.PurgeDeadLettersRequest(dead_letter_stream=_dead(target)), metadata=md
    ),
    "EnsureStore": lambda ch, target, md: _state(ch).EnsureStore(
        state_pb.EnsureStoreRequest(store=target), metadata=md
    ),
    "Get": lambda ch, target, md: _state(ch).Get(
        state_pb.GetRequest(store=target, key="k"), metadata=md
    ),
    "Set": lambda ch, target, md: _state(ch).Set(
        state_pb.SetRequest(store=target, key="k", value=_value("v")), metadata=md
    ),
    "Delete": lambda ch, target, md: _state(ch).Delete(
        state_pb.DeleteRequest(store=target, key="k"), metadata=md
    ),
}


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as failure:
        return failure.code()
    return grpc.StatusCode.OK


#: dead-letter stream -> the id of the dead letter :func:`_make_dead_letter` made last.
_LETTERS: dict[str, int] = {}


def _letter(target: str) -> int:
    """The dead letter the calls on ``target``'s dead-letter stream refer to."""
    return _LETTERS.get(_dead(target), 1)


async def _prepare(secured: Secured, channel: grpc.aio.Channel, rpc: str) -> None:
    """What the allowed call needs to succeed (made by the admin token)."""
    if rpc == "DeleteConsumer":
        await _events(channel).EnsureConsumer(
            pb.EnsureConsumerRequest(
                stream=secured.allowed, name="to-delete", subjects=[f"{secured.allowed}.>"]
            ),
            metadata=metadata(secured.admin),
        )
    elif "DeadLetter" in rpc:
        await _make_dead_letter(secured, channel, f"dead-{rpc}")


async def _make_dead_letter(secured: Secured, channel: grpc.aio.Channel, consumer: str) -> None:
    """An event of the allowed stream rejected permanently into its dead-letter stream."""
    stub, admin, stream = _events(channel), metadata(secured.admin), secured.allowed
    await stub.EnsureConsumer(
        pb.EnsureConsumerRequest(
            stream=stream,
            name=consumer,
            subjects=[f"{stream}.poison"],
            dead_letter_stream=_dead(stream),
        ),
        metadata=admin,
    )
    event_id = await _publish(channel, f"{stream}.poison", secured.admin, "poison")
    call = EventsClient(stub, admin)
    try:
        await call.subscribe(stream, consumer)
        assert (await call.next_event()).id == event_id
        assert list((await call.reject(event_id, permanently=True)).ids) == [event_id]
    finally:
        await call.cancel()
    listed: pb.ListDeadLettersResponse = await stub.ListDeadLetters(
        pb.ListDeadLettersRequest(dead_letter_stream=_dead(stream), limit=1000), metadata=admin
    )
    [letter] = [letter for letter in listed.dead_letters if letter.event_id == event_id]
    _LETTERS[_dead(stream)] = letter.id


@pytest.mark.parametrize("rpc", sorted(UNARY))
async def test_every_unary_rpc_needs_a_token_with_the_permission(
    secured: Secured, secured_channel: grpc.aio.Channel, rpc: str
) -> None:
    call = UNARY[rpc]
    target = secured.allowed
    assert await _code(call(secured_channel, target, None)) == UNAUTHENTICATED
    assert await _code(call(secured_channel, target, metadata(new_token()))) == UNAUTHENTICATED
    assert (
        await _code(call(secured_channel, target, [("authorization", secured.limited)]))
        == UNAUTHENTICATED
    )
    assert await _code(call(secured_channel, target, metadata(secured.nobody))) == PERMISSION_DENIED
    assert (
        await _code(call(secured_channel, secured.denied, metadata(secured.limited)))
        == PERMISSION_DENIED
    )
    await _prepare(secured, secured_channel, rpc)
    assert await _code(call(secured_channel, target, metadata(secured.limited))) == (
        grpc.StatusCode.OK
    )


async def test_the_denial_says_which_token_may_not_do_what(
    secured: Secured, secured_channel: grpc.aio.Channel
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await UNARY["PublishEvent"](secured_channel, secured.denied, metadata(secured.limited))
    assert denied.value.details() == (
        f"token 'limited' may not publish on subject '{secured.denied}.created'"
    )
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await UNARY["PublishEvent"](secured_channel, secured.allowed, None)
    assert "authorization: Bearer <token>" in str(unauthenticated.value.details())
    await secured.server.wait_for_line(
        f"PublishEvent denied: token 'limited' may not publish on subject '{secured.denied}"
    )


async def test_reading_state_is_not_writing_it(
    secured: Secured, secured_channel: grpc.aio.Channel
) -> None:
    reader = metadata(secured.reader)
    assert await _code(UNARY["Get"](secured_channel, secured.allowed, reader)) == grpc.StatusCode.OK
    for rpc in ("Set", "Delete", "EnsureStore"):
        assert await _code(UNARY[rpc](secured_channel, secured.allowed, reader)) == (
            PERMISSION_DENIED
        )
    # ... and consuming is not managing or publishing.
    for rpc in ("EnsureStream", "EnsureConsumer", "PublishEvent"):
        assert await _code(UNARY[rpc](secured_channel, secured.allowed, reader)) == (
            PERMISSION_DENIED
        )


async def test_a_dead_letter_stream_needs_manage_too(
    secured: Secured, secured_channel: grpc.aio.Channel
) -> None:
    def consumer(dead_letter_stream: str) -> pb.EnsureConsumerRequest:
        return pb.EnsureConsumerRequest(
            stream=secured.allowed,
            name="guarded-dead",
            subjects=[f"{secured.allowed}.>"],
            dead_letter_stream=dead_letter_stream,
        )

    stub = _events(secured_channel)
    as_limited = metadata(secured.limited)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.EnsureConsumer(consumer(_dead(secured.denied)), metadata=as_limited)
    assert denied.value.code() == PERMISSION_DENIED
    assert denied.value.details() == (
        f"token 'limited' may not manage stream '{_dead(secured.denied)}'"
    )
    assert await _code(
        stub.EnsureConsumer(consumer(_dead(secured.allowed)), metadata=as_limited)
    ) == (grpc.StatusCode.OK)
    # Removing it ("") names no stream to manage: only the consumer's stream counts.
    assert await _code(stub.EnsureConsumer(consumer(""), metadata=as_limited)) == (
        grpc.StatusCode.OK
    )


async def test_reading_dead_letters_is_not_managing_them(
    secured: Secured, secured_channel: grpc.aio.Channel
) -> None:
    await _make_dead_letter(secured, secured_channel, "dead-reader")
    reader = metadata(secured.reader)  # consume on the dead-letter stream, no manage
    for rpc in ("ListDeadLetters", "GetDeadLetter"):
        assert await _code(UNARY[rpc](secured_channel, secured.allowed, reader)) == (
            grpc.StatusCode.OK
        )
    for rpc in ("ReplayDeadLetter", "DeleteDeadLetter", "PurgeDeadLetters"):
        assert await _code(UNARY[rpc](secured_channel, secured.allowed, reader)) == (
            PERMISSION_DENIED
        )


async def test_a_mirror_needs_consume_on_its_source(
    secured: Secured, secured_channel: grpc.aio.Channel
) -> None:
    def mirror_of(source: str) -> pb.EnsureStreamRequest:
        return pb.EnsureStreamRequest(
            name=secured.mirror, mirror=pb.EnsureStreamRequest.StreamSource(name=source)
        )

    stub = _events(secured_channel)
    as_limited = metadata(secured.limited)
    assert await _code(stub.EnsureStream(mirror_of(secured.denied), metadata=as_limited)) == (
        PERMISSION_DENIED
    )
    aggregate = pb.EnsureStreamRequest(
        name=secured.mirror,
        aggregate=pb.EnsureStreamRequest.StreamSources(
            sources=[
                pb.EnsureStreamRequest.StreamSource(name=secured.allowed),
                pb.EnsureStreamRequest.StreamSource(name=secured.denied),
            ]
        ),
    )
    assert await _code(stub.EnsureStream(aggregate, metadata=as_limited)) == PERMISSION_DENIED
    assert await _code(stub.EnsureStream(mirror_of(secured.allowed), metadata=as_limited)) == (
        grpc.StatusCode.OK
    )


async def _consumer(secured: Secured, channel: grpc.aio.Channel, stream: str, name: str) -> None:
    await _events(channel).EnsureConsumer(
        pb.EnsureConsumerRequest(stream=stream, name=name, subjects=[f"{stream}.>"]),
        metadata=metadata(secured.admin),
    )


async def _publish(channel: grpc.aio.Channel, subject: str, token: str, text: str) -> int:
    response: pb.PublishEventResponse = await _events(channel).PublishEvent(
        pb.PublishEventRequest(subject=subject, data=string_any(text)), metadata=metadata(token)
    )
    return response.id


async def test_events_needs_a_token_and_consume_on_the_subscribed_stream(
    secured: Secured, secured_channel: grpc.aio.Channel, name: str
) -> None:
    stub = _events(secured_channel)
    await _consumer(secured, secured_channel, secured.allowed, name)
    await _consumer(secured, secured_channel, secured.denied, name)

    for md in (None, metadata(new_token())):
        call = EventsClient(stub, md)
        # Refused before the first message: nothing needs to be sent.
        assert await call.finish() == UNAUTHENTICATED
        assert call.responses == []

    for token, stream in (
        (secured.nobody, secured.allowed),
        (secured.limited, secured.denied),
        (secured.reader, secured.denied),
    ):
        call = EventsClient(stub, metadata(token))
        call.send(
            pb.EventsRequest(subscribe=pb.EventsRequest.Subscribe(stream=stream, consumer=name))
        )
        assert await call.finish() == PERMISSION_DENIED
        assert f"may not consume stream '{stream}'" in await call.details()
        assert call.responses == []


async def test_settling_events_is_allowed_once_subscribed(
    secured: Secured, secured_channel: grpc.aio.Channel, name: str
) -> None:
    stub = _events(secured_channel)
    await _consumer(secured, secured_channel, secured.allowed, name)
    call = EventsClient(stub, metadata(secured.reader))  # consume only
    try:
        await call.subscribe(secured.allowed, name)
        ids = [
            await _publish(secured_channel, f"{secured.allowed}.created", secured.limited, text)
            for text in ("a", "b", "c")
        ]
        events = await call.events(3)
        assert [unpack_text(event) for event in events] == ["a", "b", "c"]
        assert list((await call.ping(ids[0])).ids) == [ids[0]]
        assert list((await call.reject(ids[1], permanently=True)).ids) == [ids[1]]
        assert list((await call.ack(ids[0], ids[2])).ids) == [ids[0], ids[2]]
        call.half_close()
        assert await call.finish() == grpc.StatusCode.OK
    finally:
        if not call.ended.is_set():
            await call.cancel()


async def test_health_and_reflection_stay_open(secured_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(secured_channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(secured_channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services="")]
    [listed] = [response async for response in reflect.ServerReflectionInfo(iter(requests))]
    assert "windshift.events.v1alpha1.EventsService" in {
        service.name for service in listed.list_services_response.service
    }


async def test_garbage_without_a_token_is_unauthenticated(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(secured.server.target) as channel:
        raw = channel.unary_unary(
            "/windshift.events.v1alpha1.EventsService/PublishEvent",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        assert await _code(raw(b"\xff\xff\xff not a message")) == UNAUTHENTICATED


async def test_tokens_never_reach_the_logs(
    secured: Secured, secured_channel: grpc.aio.Channel
) -> None:
    # Every token was used by now, rightly and wrongly (and this one again).
    for token in secured.all_tokens():
        await _code(UNARY["Get"](secured_channel, secured.denied, metadata(token)))
    await secured.server.wait_for_line("Get denied: token 'reader'")
    logged = secured.server.log + "\n".join(secured.server.stdout)
    assert "API calls need a bearer token: 4 token(s)" in logged
    for token in secured.all_tokens():
        assert token not in logged
        assert digest(token).hex() not in logged


# --- reloading the tokens file --------------------------------------------------


async def test_sighup_reloads_the_tokens_and_ends_the_open_calls_it_withdrew(
    start_serve: StartServe, client: windshift.Client, tmp_path: Path, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    for consumer in ("one", "two"):
        await client.ensure_consumer(
            name, consumer, subjects=[f"{name}.>"], start=windshift.StreamPointer.start()
        )
    await client.publish(f"{name}.created", StringValue(value="hello"))
    first, second, third = new_token(), new_token(), new_token()

    def write(entries: list[dict[str, Any]]) -> None:
        write_tokens(path, {"tokens": entries})

    path = tmp_path / "tokens.json"
    write(
        [
            {"name": "first", "token": first, "consume": [name]},
            {"name": "second", "token": second, "consume": [name]},
        ]
    )
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(path))
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = _events(channel)
        calls = {
            "first": EventsClient(stub, metadata(first)),
            "second": EventsClient(stub, metadata(second)),
        }
        try:
            held = {}
            for label, consumer in (("first", "one"), ("second", "two")):
                await calls[label].subscribe(name, consumer)
                held[label] = await calls[label].next_event()

            # "first" loses its permission, "second" is gone, "third" is new.
            write(
                [
                    {"name": "first", "token": first},
                    {"name": "third", "token": hashed(third), "consume": [name]},
                ]
            )
            start = len(server.lines)
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            await server.wait_for_line(r"reloaded 2 token\(s\)", after=start)

            # Both end at once, without waiting for their next message
            # (tests/grpc/test_attacks_calls.py has silent subscribers).
            assert await calls["first"].finish() == PERMISSION_DENIED
            assert await calls["second"].finish() == UNAUTHENTICATED

            fresh = EventsClient(stub, metadata(third))
            calls["third"] = fresh
            await fresh.subscribe(name, "one")

            # A file that no longer loads keeps the tokens in use.
            path.write_text("{ not json")
            start = len(server.lines)
            server.process.send_signal(signal.SIGHUP)
            line = await server.wait_for_line("keeping the tokens in use", after=start)
            assert "WINDSHIFT_AUTH_FILE" in line
            assert (
                await _code(
                    stub.EnsureStream(pb.EnsureStreamRequest(name=name), metadata=metadata(third))
                )
                == PERMISSION_DENIED
            )
        finally:
            for call in calls.values():
                if not call.ended.is_set():
                    await call.cancel()
    for token in (first, second, third):
        assert token not in server.log
