"""The public surface: every public name is exported from the package root, and nothing else.

In the manner of httpx's ``test_exported_members``: a public name that appears
or disappears fails here until the list below is changed on purpose (and
docs/api.md with it).
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from pathlib import Path

import windshift
import windshift.errors

EXPORTED = [
    "AlreadyExistsError",
    "Client",
    "ClientSettings",
    "ConfigurationConflictError",
    "ConflictError",
    "ConsumerInfo",
    "ConsumerLag",
    "ConsumerNotFoundError",
    "ConsumerOptions",
    "DeadLetter",
    "DeadLetterQueue",
    "EmbeddedNats",
    "Event",
    "EventSettledError",
    "EventTail",
    "KeyNotFoundError",
    "Limits",
    "NotFoundError",
    "OutgoingEvent",
    "PublishedEvent",
    "Retry",
    "StateChange",
    "StateEntry",
    "StateStore",
    "StateWatch",
    "StoreNotFoundError",
    "StoredEvent",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamOptions",
    "StreamPointer",
    "StreamSource",
    "Subscription",
    "UnavailableError",
    "ValidationError",
    "WindshiftError",
    "Worker",
    "connect",
]

#: The submodules a user may import; every other one is private (``_name``).
PUBLIC_SUBMODULES = {"errors", "testing"}


def test_the_exported_names_are_pinned_and_sorted() -> None:
    assert windshift.__all__ == EXPORTED
    assert windshift.__all__ == sorted(windshift.__all__)


def test_every_public_name_at_the_root_is_exported() -> None:
    public = {
        name
        for name, value in vars(windshift).items()
        if not name.startswith("_") and not isinstance(value, type(windshift))
    }
    assert public == set(EXPORTED)


def test_exported_names_belong_to_the_package_root() -> None:
    for name in EXPORTED:
        value = getattr(windshift, name)
        assert value.__module__ == "windshift", f"{name}.__module__ is {value.__module__}"
        assert value.__doc__, f"{name} has no docstring"


def test_the_annotations_of_exported_classes_still_resolve() -> None:
    # What pydantic and documentation tools do with a class: its string
    # annotations are resolved in the module its __module__ names.
    for name in EXPORTED:
        value = getattr(windshift, name)
        if isinstance(value, type):
            typing.get_type_hints(value)


def test_implementation_modules_are_private() -> None:
    found = {module.name for module in pkgutil.iter_modules(windshift.__path__)}
    public = {name for name in found if not name.startswith("_")}
    assert public == PUBLIC_SUBMODULES
    for name in found:
        importlib.import_module(f"windshift.{name}")


def test_the_errors_module_exports_the_tree_the_root_exports() -> None:
    errors = {
        name
        for name in EXPORTED
        if isinstance(getattr(windshift, name), type)
        and issubclass(getattr(windshift, name), Exception)
    }
    assert set(windshift.errors.__all__) == errors
    for name in errors:
        assert getattr(windshift.errors, name) is getattr(windshift, name)


def test_every_error_derives_from_windshift_error() -> None:
    for name in EXPORTED:
        value = getattr(windshift, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, windshift.WindshiftError)


def test_docs_api_documents_every_exported_name() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for name in EXPORTED:
        value = getattr(windshift, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert f"`{name}`" in text, f"docs/api.md does not name {name}"
        else:
            assert f"## `windshift.{name}`" in text, f"docs/api.md has no section on {name}"
