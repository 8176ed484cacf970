"""NATS credentials: the library's ``connect`` and ``windshift-grpc serve`` against NATS
servers that require them (user and password, token, NKey seed, a creds file of an
operator-mode server, TLS client certificates).

Each server is a real nats-server (``EmbeddedNats`` with ``extra_config``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import nkeys
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._pki import Pki
from tests.grpc_fixtures import StartServe, serve_command, serve_env
from windshift import EmbeddedNats, UnavailableError, ValidationError
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.settings import Settings, SettingsError

_FAST = {"connect_timeout": timedelta(seconds=1), "reconnect_wait": timedelta(milliseconds=50)}


@dataclass
class SecuredNats:
    """A nats-server requiring one kind of credentials, and the right and wrong ones."""

    server: EmbeddedNats
    #: connect() keywords that work / do not
    good: dict[str, Any]
    bad: dict[str, Any]
    #: serve settings that work
    env: dict[str, str]
    #: what must never be logged
    secrets: list[str] = field(default_factory=list)
    #: what the error of a refused connection says
    refusal: str = "Authorization Violation"


def _user_password(directory: Path, pki: Pki) -> SecuredNats:
    password = secrets.token_urlsafe(18)
    config = f'authorization {{ user: "alice", password: "{password}" }}'
    return SecuredNats(
        EmbeddedNats(store_dir=directory, extra_config=config),
        good={"user": "alice", "password": password},
        bad={"user": "alice", "password": "not-" + password},
        env={"NATS_USER": "alice", "NATS_PASSWORD": password},
        secrets=[password],
    )


def _token(directory: Path, pki: Pki) -> SecuredNats:
    token = secrets.token_urlsafe(18)
    return SecuredNats(
        EmbeddedNats(store_dir=directory, extra_config=f'authorization {{ token: "{token}" }}'),
        good={"token": token},
        bad={"token": "not-" + token},
        env={"NATS_TOKEN": token},
        secrets=[token],
    )


def _nkey_seed(name: str, directory: Path) -> tuple[Path, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = directory / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    return path, nkeys.from_seed(bytearray(seed)).public_key.decode()


def _nkey(directory: Path, pki: Pki) -> SecuredNats:
    seed_file, public_key = _nkey_seed("user", directory)
    other_seed, _ = _nkey_seed("other", directory)
    config = f"authorization {{ users: [ {{ nkey: {public_key} }} ] }}"
    return SecuredNats(
        EmbeddedNats(store_dir=directory, extra_config=config),
        good={"nkey_seed_file": str(seed_file)},
        bad={"nkey_seed_file": str(other_seed)},
        env={"NATS_NKEY_SEED": str(seed_file)},
        secrets=[seed_file.read_text().strip()],
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _keypair(prefix: int) -> tuple[bytes, Any, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed, pair, pair.public_key.decode()


def _jwt(issuer: Any, subject: str, name: str, claims: dict[str, Any]) -> str:
    """A NATS JWT (ed25519-nkey), signed by ``issuer``, as nsc would make it."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**claims, "version": 2},
    }
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode()
    payload = _b64(json.dumps(body).encode())
    return f"{header}.{payload}.{_b64(issuer.sign(f'{header}.{payload}'.encode()))}"


def _creds_file(path: Path, account: Any) -> Path:
    seed, _, user = _keypair(nkeys.PREFIX_BYTE_USER)
    token = _jwt(
        account,
        user,
        "windshift",
        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    )
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return path


def _creds(directory: Path, pki: Pki) -> SecuredNats:
    """Operator mode (JWTs, a memory resolver), as with nsc: the production NATS set-up."""
    _, operator, operator_public = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account, account_public = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    system_public = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)[2]
    stranger = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)[1]  # an account the server does not know
    limits = {
        **dict.fromkeys(("conn", "subs", "data", "payload", "imports", "exports", "leaf"), -1),
        **dict.fromkeys(("mem_storage", "disk_storage", "streams", "consumer"), -1),
        "wildcards": True,
    }
    config = "\n".join(
        [
            f"operator: {_jwt(operator, operator_public, 'test', {'type': 'operator'})}",
            f"system_account: {system_public}",
            "resolver: MEMORY",
            "resolver_preload: {",
            f"  {account_public}: "
            + _jwt(operator, account_public, "app", {"type": "account", "limits": limits}),
            f"  {system_public}: " + _jwt(operator, system_public, "SYS", {"type": "account"}),
            "}",
        ]
    )
    good = _creds_file(directory / "user.creds", account)
    bad = _creds_file(directory / "stranger.creds", stranger)
    return SecuredNats(
        EmbeddedNats(store_dir=directory, extra_config=config),
        good={"credentials_file": str(good)},
        bad={"credentials_file": str(bad)},
        env={"NATS_CREDS": str(good)},
        secrets=[good.read_text().split("-----BEGIN USER NKEY SEED-----\n")[1].split("\n")[0]],
    )


def _client_context(pki: Pki, *, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def _tls(directory: Path, pki: Pki) -> SecuredNats:
    config = (
        "tls {\n"
        f'  cert_file: "{pki.server_cert}"\n'
        f'  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n'
        "  verify: true\n"
        "}"
    )
    return SecuredNats(
        EmbeddedNats(store_dir=directory, extra_config=config),
        good={"tls": _client_context(pki, client_cert=True)},
        bad={"tls": _client_context(pki, client_cert=False)},
        env={
            "NATS_TLS_CA": str(pki.ca),
            "NATS_TLS_CERT": str(pki.client_cert),
            "NATS_TLS_KEY": str(pki.client_key),
        },
        refusal="certificate required",
    )


KINDS: dict[str, Callable[[Path, Pki], SecuredNats]] = {
    "creds-jwt": _creds,
    "user-password": _user_password,
    "token": _token,
    "nkey": _nkey,
    "tls-client-certificate": _tls,
}


@pytest.fixture(params=sorted(KINDS))
async def secured_nats(
    request: pytest.FixtureRequest, tmp_path: Path, pki: Pki
) -> AsyncIterator[SecuredNats]:
    secured = KINDS[request.param](tmp_path, pki)
    await secured.server.start()
    try:
        yield secured
    finally:
        await secured.server.stop()


async def test_connect_passes_the_credentials_through(secured_nats: SecuredNats, name: str) -> None:
    url = secured_nats.server.url
    async with windshift.connect(url, **secured_nats.good) as client:
        await client.ensure_stream(name, subjects=[f"{name}.>"])
        published = await client.publish(f"{name}.a", StringValue(value="authorized"))
        assert published.id == 1

    for wrong in ({}, secured_nats.bad):
        with pytest.raises(UnavailableError) as refused:
            await windshift.connect(url, **wrong, **_FAST)  # type: ignore[arg-type]
        message = str(refused.value)
        assert "cannot connect to NATS" in message
        for secret in secured_nats.secrets:
            assert secret not in message


async def test_a_refusal_names_the_reason(secured_nats: SecuredNats) -> None:
    with pytest.raises(UnavailableError, match=secured_nats.refusal):
        await windshift.connect(secured_nats.server.url, **secured_nats.bad, **_FAST)  # type: ignore[arg-type]


async def test_a_server_certificate_that_does_not_verify_fails_at_once(
    tmp_path: Path, pki: Pki
) -> None:
    secured = _tls(tmp_path, pki)
    async with secured.server:
        # No CA given: the system's do not know the test CA. (nats-py alone
        # would hang here, closing the half-upgraded connection.)
        with pytest.raises(UnavailableError, match="certificate verify failed"):
            await asyncio.wait_for(windshift.connect(secured.server.url), 10)


async def test_serve_connects_with_the_nats_settings(
    secured_nats: SecuredNats, start_serve: StartServe, name: str
) -> None:
    server = await start_serve(NATS_URL=secured_nats.server.url, **secured_nats.env)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.EventsServiceStub(channel)
        await stub.EnsureStream(
            pb.EnsureStreamRequest(
                name=name, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{name}.>"])
            )
        )
    for secret in secured_nats.secrets:
        assert secret not in server.log


async def test_serve_without_the_credentials_cannot_start(secured_nats: SecuredNats) -> None:
    env = serve_env(secured_nats.server.url)
    process = await asyncio.create_subprocess_exec(
        *serve_command(), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert "could not start" in err.decode()
    assert "cannot connect to NATS" in err.decode()


async def test_credentials_in_the_url_never_reach_the_logs(
    start_serve: StartServe, tmp_path: Path, pki: Pki
) -> None:
    secured = _user_password(tmp_path, pki)
    password = secured.good["password"]
    host = secured.server.url.removeprefix("nats://")
    async with secured.server:
        server = await start_serve(NATS_URL=f"nats://alice:{password}@{host}")
        assert f"NATS at {host}" in await server.wait_for_line("ready")
        env = serve_env(f"nats://alice:wrong-{password}@{host}")
        process = await asyncio.create_subprocess_exec(
            *serve_command(), env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1
        assert "Authorization Violation" in err.decode()
        assert password not in err.decode()
    assert password not in server.log


# --- the library's checks of the options ----------------------------------------


def test_connect_checks_the_credential_options(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="user and password go together"):
        windshift.connect(user="alice")
    with pytest.raises(ValidationError, match="user and token are two ways"):
        windshift.connect(user="alice", password="pw", token="t")
    with pytest.raises(ValidationError, match="credentials_file must name an existing file"):
        windshift.connect(credentials_file=str(tmp_path / "missing.creds"))
    with pytest.raises(ValidationError, match="nkey_seed_file must name an existing file"):
        windshift.connect(nkey_seed_file=str(tmp_path))
    with pytest.raises(ValidationError, match=r"tls must be an ssl\.SSLContext"):
        windshift.connect(tls=True)  # type: ignore[arg-type]


# --- serve's NATS settings ------------------------------------------------------


def test_nats_settings(tmp_path: Path, pki: Pki) -> None:
    seed, _ = _nkey_seed("user", tmp_path)
    external = {"NATS_URL": "nats://nats:4222", "WINDSHIFT_AUTH": "none"}
    settings = Settings.from_env(
        {
            **external,
            "NATS_USER": "alice",
            "NATS_PASSWORD": "pw-secret-1",
            "NATS_TLS_CA": str(pki.ca),
        }
    )
    options = settings.nats_options()
    assert {key: options[key] for key in ("user", "password")} == {
        "user": "alice",
        "password": "pw-secret-1",
    }
    assert isinstance(options["tls"], ssl.SSLContext)
    assert "pw-secret-1" not in repr(settings)
    token = Settings.from_env({**external, "NATS_TOKEN": "tok-secret-2"})
    assert token.nats_options() == {"token": "tok-secret-2"}
    assert "tok-secret-2" not in repr(token)
    assert Settings.from_env({**external, "NATS_NKEY_SEED": str(seed)}).nats_options() == {
        "nkey_seed_file": str(seed)
    }
    assert Settings.from_env({**external, "NATS_CREDS": str(seed)}).nats_options() == {
        "credentials_file": str(seed)
    }
    assert Settings.from_env(external).nats_options() == {}

    cases = [
        ({**external, "NATS_USER": "alice"}, "NATS_PASSWORD", "go together"),
        ({**external, "NATS_PASSWORD": "pw"}, "NATS_USER", "go together"),
        (
            {**external, "NATS_USER": "a", "NATS_PASSWORD": "b", "NATS_TOKEN": "c"},
            "NATS_TOKEN",
            "one way",
        ),
        ({**external, "NATS_CREDS": str(tmp_path / "none.creds")}, "NATS_CREDS", "not a file"),
        ({**external, "NATS_TLS_CERT": str(pki.client_cert)}, "NATS_TLS_KEY", "go together"),
        (
            {
                **external,
                "NATS_TLS_CERT": str(pki.client_cert),
                "NATS_TLS_KEY": str(pki.server_key),
            },
            "NATS_TLS_KEY",
            "cannot be loaded",
        ),
        (
            {**external, "NATS_TLS_CA": str(pki.directory / "ca.key")},
            "NATS_TLS_CA",
            "cannot be loaded",
        ),
        ({"NATS_TOKEN": "t"}, "NATS_TOKEN", "NATS_URL, which is not set"),
    ]
    for env, variable, complaint in cases:
        with pytest.raises(SettingsError) as error:
            Settings.from_env(env)
        assert error.value.name == variable, env
        assert complaint in str(error.value), env
