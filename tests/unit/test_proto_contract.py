"""The proto contract documents itself: every service, RPC, message, field, oneof, enum and enum
value of both protos has a leading comment, and every RPC's comment names the roles it accepts
and the gRPC status codes it can answer with.

The protos are compiled here with their source info (the comments), so the check reads the
.proto files themselves rather than the generated code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from checkout_service.grpc import access as checkout_access
from entitlement_service.grpc import access as entitlement_access

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILES = ("selfserve/entitlement/v1/entitlement.proto", "selfserve/checkout/v1/checkout.proto")
STATUS_CODES = frozenset(code.name for code in grpc.StatusCode)
ROLES_BY_SERVICE = {
    entitlement_access.SERVICE: entitlement_access.ROLES_BY_RPC,
    checkout_access.SERVICE: checkout_access.ROLES_BY_RPC,
}

# Field numbers inside descriptor.proto, which source-info paths are made of.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE = 2
SERVICE_METHOD = 2


@dataclass(frozen=True)
class Element:
    """One documented element: its kind ("field", "rpc"...), full name and leading comment."""

    kind: str
    name: str
    comment: str


def compile_protos(proto_root: Path, files: tuple[str, ...], out_dir: Path) -> descriptor_pb2.FileDescriptorSet:
    """The files compiled by protoc, comments included (`--include_source_info`)."""
    out = out_dir / "protos.binpb"
    well_known = resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{proto_root}", f"-I{well_known}", "--include_source_info",
            f"--descriptor_set_out={out}", *files]
    assert protoc.main(args) == 0, f"protoc could not compile {', '.join(files)}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _paths(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """Every element a caller sees, as (kind, full name, source-info path)."""
    for i, service in enumerate(file.service):
        name = f"{file.package}.{service.name}"
        yield "service", name, (FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield "rpc", f"{name}.{method.name}", (FILE_SERVICE, i, SERVICE_METHOD, j)
    for i, enum in enumerate(file.enum_type):
        yield from _enum_paths(enum, file.package, (FILE_ENUM, i))
    for i, message in enumerate(file.message_type):
        yield from _message_paths(message, file.package, (FILE_MESSAGE, i))


def _message_paths(message: descriptor_pb2.DescriptorProto, scope: str,
                   path: tuple[int, ...]) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    if message.options.map_entry:
        return  # the key/value message protoc makes for a map field: documented by the field
    name = f"{scope}.{message.name}"
    yield "message", name, path
    for i, field in enumerate(message.field):
        yield "field", f"{name}.{field.name}", (*path, MESSAGE_FIELD, i)
    # The oneof protoc makes for a proto3 `optional` field has no place for a comment: the field's own documents it.
    synthetic = {f.oneof_index for f in message.field if f.proto3_optional}
    for i, oneof in enumerate(message.oneof_decl):
        if i not in synthetic:
            yield "oneof", f"{name}.{oneof.name}", (*path, MESSAGE_ONEOF, i)
    for i, nested in enumerate(message.nested_type):
        yield from _message_paths(nested, name, (*path, MESSAGE_NESTED, i))
    for i, enum in enumerate(message.enum_type):
        yield from _enum_paths(enum, name, (*path, MESSAGE_ENUM, i))


def _enum_paths(enum: descriptor_pb2.EnumDescriptorProto, scope: str,
                path: tuple[int, ...]) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    name = f"{scope}.{enum.name}"
    yield "enum", name, path
    for i, value in enumerate(enum.value):
        yield "enum value", f"{name}.{value.name}", (*path, ENUM_VALUE, i)


def elements(files: descriptor_pb2.FileDescriptorSet) -> list[Element]:
    """Every element of every file with its leading comment ("" when it has none)."""
    found = []
    for file in files.file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        found += [Element(kind, name, comments.get(path, "").strip()) for kind, name, path in _paths(file)]
    return found


def uncommented(found: list[Element]) -> list[str]:
    return [f"{e.kind} {e.name}" for e in found if not e.comment]


def flattened(comment: str) -> str:
    """A comment's lines as one line of words."""
    return " ".join(comment.split())


def _without_parentheses(text: str) -> str:
    out, depth = [], 0
    for char in text:
        depth += char == "("
        if depth == 0:
            out.append(char)
        depth -= char == ")" and depth > 0
    return "".join(out)


def named_codes(comment: str) -> list[str]:
    """The status codes an `Errors:` part names, explanations in parentheses set aside."""
    _, found, errors = flattened(comment).partition("Errors:")
    if not found:
        return []
    names = (part.strip().rstrip(".").strip() for part in _without_parentheses(errors).split(","))
    return [name for name in names if name]


def named_roles(comment: str) -> set[str]:
    """The roles a `Roles:` part names, up to its closing full stop."""
    match = re.search(r"Roles:([^.]*)\.", flattened(comment))
    return {role.strip() for role in match.group(1).split(",")} if match else set()


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> list[Element]:
    return elements(compile_protos(PROTO_ROOT, PROTO_FILES, tmp_path_factory.mktemp("protos")))


def rpcs(contract: list[Element]) -> list[Element]:
    return [e for e in contract if e.kind == "rpc"]


def test_every_service_rpc_message_field_oneof_enum_and_value_has_a_leading_comment(
        contract: list[Element]) -> None:
    assert {e.kind for e in contract} == {"service", "rpc", "message", "field", "oneof", "enum", "enum value"}
    assert uncommented(contract) == []


def test_every_rpc_comment_names_its_roles_as_the_access_table_grants_them(contract: list[Element]) -> None:
    wrong = {}
    for rpc in rpcs(contract):
        service, _, method = rpc.name.rpartition(".")
        granted = {role.value for role in ROLES_BY_SERVICE[service][method]}
        if named_roles(rpc.comment) != granted:
            wrong[rpc.name] = (sorted(named_roles(rpc.comment)), sorted(granted))
    assert wrong == {}


def test_every_rpc_comment_ends_with_errors_naming_only_real_status_codes(contract: list[Element]) -> None:
    for rpc in rpcs(contract):
        codes = named_codes(rpc.comment)
        last_line = rpc.comment.splitlines()[-1]
        assert codes, f"{rpc.name} has no `Errors:` part"
        assert "Errors:" in rpc.comment.rpartition("Roles:")[2], f"{rpc.name}: `Errors:` must follow `Roles:`"
        assert last_line.rstrip().endswith("."), f"{rpc.name}: the comment must end with the `Errors:` part"
        assert set(codes) <= STATUS_CODES, f"{rpc.name} names {sorted(set(codes) - STATUS_CODES)}"
        assert len(codes) == len(set(codes)), f"{rpc.name} names a status code twice"


def test_every_rpc_can_answer_unauthenticated_and_permission_denied(contract: list[Element]) -> None:
    # Every RPC checks the caller's bearer token and role before anything else.
    missing = [rpc.name for rpc in rpcs(contract)
               if not {"UNAUTHENTICATED", "PERMISSION_DENIED"} <= set(named_codes(rpc.comment))]
    assert missing == []


def test_no_comment_points_to_a_design_file_that_is_not_in_this_repository(contract: list[Element]) -> None:
    assert [e.name for e in contract if "DESIGN" in e.comment] == []


def test_the_check_finds_an_element_left_without_a_comment(tmp_path: Path) -> None:
    (tmp_path / "sample.proto").write_text(
        'syntax = "proto3";\n'
        "package sample.v1;\n"
        "// A documented message.\n"
        "message Documented {\n"
        "  // A documented field.\n"
        "  string documented = 1;\n"
        "  string bare = 2;\n"
        "  map<string, string> labels = 3;\n"
        "  // A documented optional field.\n"
        "  optional string maybe = 4;\n"
        "  oneof choice {\n"
        "    // A documented choice.\n"
        "    string one = 5;\n"
        "  }\n"
        "}\n"
        "enum Bare {\n"
        "  // The zero value.\n"
        "  BARE_UNSPECIFIED = 0;\n"
        "}\n")
    found = elements(compile_protos(tmp_path, ("sample.proto",), tmp_path))
    assert uncommented(found) == ["enum sample.v1.Bare", "field sample.v1.Documented.bare",
                                  "field sample.v1.Documented.labels", "oneof sample.v1.Documented.choice"]


def test_errors_are_read_with_their_explanations_set_aside() -> None:
    comment = ("Does a thing. Roles: product, support.\n"
               "Errors: INVALID_ARGUMENT (a required field is missing (the message names it)),\n"
               "NOT_FOUND (no such purchase), UNAUTHENTICATED, PERMISSION_DENIED.")
    assert named_codes(comment) == ["INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED"]
    assert named_roles(comment) == {"product", "support"}
