"""docs/protocol.md and docs/protocol.schema.json say what edge_runtime.protocol does, exactly.

The schema file is generated (``edgefleet protocol schema``) and committed; the
document is written by people. These tests fail when the file is stale, when
the document's message reference misses a message or a field of the schema
(or lists one the schema lacks, or gives it another type or requiredness),
when its topic table disagrees with a message's topic, QoS or retain flag,
and when one of its examples would be refused by the reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_runtime.protocol import (
    MESSAGES,
    SCHEMA_PATH,
    Availability,
    ChunkMeta,
    DeviceReport,
    FieldAck,
    FieldDataSettings,
    Message,
    WireMessage,
    schema_document,
    schema_text,
)
from edge_runtime.protocol.shadow import ShadowRequest
from edgefleet.cli import cli

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
JSON_TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}
ROW = re.compile(r"^\| `(?P<field>[^`]+)` \| (?P<type>[^|]+?) \| (?P<required>yes|no) \| [^|]+ \|$")


# --- the schema file -------------------------------------------------------------------


@pytest.mark.locked_env  # another pydantic may word the same schema differently
def test_the_committed_schema_is_the_generated_one() -> None:
    committed = (ROOT / SCHEMA_PATH).read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "docs/protocol.schema.json is stale: run `edgefleet protocol schema --out "
        "docs/protocol.schema.json` and commit it"
    )


def test_the_committed_schema_has_every_message_with_its_topic_and_fields() -> None:
    committed = json.loads((ROOT / SCHEMA_PATH).read_text(encoding="utf-8"))["messages"]
    generated = schema_document()["messages"]
    assert list(committed) == list(generated) == [m.name for m in MESSAGES]
    for name, message in generated.items():
        stored = committed[name]
        assert {k: v for k, v in stored.items() if k != "schema"} == {
            k: v for k, v in message.items() if k != "schema"
        }
        if message["schema"] is not None:
            fields = set(schema_fields(message["schema"], message["schema"]))
            assert set(schema_fields(stored["schema"], stored["schema"])) == fields


def test_the_schema_command_writes_prints_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(cli, ["protocol", "schema"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == schema_document()

    out = tmp_path / "schema.json"
    assert runner.invoke(cli, ["protocol", "schema", "--out", str(out)]).exit_code == 0
    assert out.read_text(encoding="utf-8") == schema_text()
    assert runner.invoke(cli, ["protocol", "schema", "--check", "--out", str(out)]).exit_code == 0

    out.write_text(schema_text().replace('"qos": 1', '"qos": 2', 1), encoding="utf-8")
    stale = runner.invoke(cli, ["protocol", "schema", "--check", "--out", str(out)])
    assert stale.exit_code == 1 and "not the current protocol schema" in stale.output
    assert runner.invoke(cli, ["protocol", "schema", "--check"]).exit_code == 2  # needs --out


# --- the document ------------------------------------------------------------------------


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _types(node: dict[str, Any], root: dict[str, Any]) -> frozenset[str]:
    node = _resolve(node, root)
    if "anyOf" in node:
        return frozenset().union(*(_types(option, root) for option in node["anyOf"]))
    kind = node.get("type")
    assert isinstance(kind, str), f"a schema node without one JSON type: {node}"
    return frozenset({kind})


def schema_fields(
    node: dict[str, Any], root: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, frozenset[str], bool]]:
    """Every field of an object schema as (dotted path, JSON types, required), nested models included.

    Free-form maps (``additionalProperties`` only) are one field; a list of
    objects contributes ``list[].field`` paths.
    """
    node = _resolve(node, root)
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        path = prefix + name
        yield path, _types(prop, root), name in required
        resolved = _resolve(prop, root)
        for option in (_resolve(o, root) for o in resolved.get("anyOf", [resolved])):
            if "properties" in option:
                yield from schema_fields(option, root, path + ".")
            elif option.get("type") == "array":
                items = _resolve(option.get("items", {}), root)
                if "properties" in items:
                    yield from schema_fields(items, root, path + "[].")


def reference_sections() -> dict[str, str]:
    """Message name -> its section of "## Message reference" in docs/protocol.md."""
    reference = DOC[DOC.index("## Message reference") :]
    parts = re.split(r"^### `([a-z_]+)`[ \t]*$", reference, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def documented_fields(section: str) -> dict[str, tuple[frozenset[str], bool]]:
    rows: dict[str, tuple[frozenset[str], bool]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        match = ROW.match(line)
        assert match, f"a field row not of the form | `field` | type | yes/no | meaning |: {line}"
        types = frozenset(t.strip() for t in match["type"].split(" or "))
        assert types <= JSON_TYPES, f"{match['field']}: {types - JSON_TYPES} are not JSON types"
        assert match["field"] not in rows, f"{match['field']} is documented twice"
        rows[match["field"]] = (types, match["required"] == "yes")
    return rows


def topic_rows() -> dict[str, list[str]]:
    table = DOC[DOC.index("## Topics") : DOC.index("## TUF metadata over MQTT")]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_the_reference_documents_every_message_and_nothing_else() -> None:
    assert list(reference_sections()) == [m.name for m in MESSAGES]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.name)
def test_the_reference_documents_every_field_of_the_schema_and_nothing_else(
    message: Message,
) -> None:
    section = reference_sections()[message.name]
    documented = documented_fields(section)
    schema = message.json_schema()
    if message.encoding != "json":
        assert not documented, f"{message.name} is not JSON: it has no fields"
        if schema is not None:  # text: every value is named
            for value in schema["enum"]:
                assert f"`{value}`" in section
        return
    assert schema is not None
    expected = {path: (types, required) for path, types, required in schema_fields(schema, schema)}
    assert set(documented) == set(expected), (
        f"missing from the doc: {sorted(set(expected) - set(documented))}; "
        f"not in the schema: {sorted(set(documented) - set(expected))}"
    )
    for path, (types, required) in expected.items():
        assert documented[path] == (types, required), (
            f"{message.name}.{path}: the doc says {sorted(documented[path][0])}, "
            f"required={documented[path][1]}; the schema {sorted(types)}, required={required}"
        )


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.name)
def test_the_topic_table_and_the_section_agree_with_the_message(message: Message) -> None:
    cells = topic_rows()[message.topic]
    assert cells[1] == message.direction
    assert cells[3].split()[0] == str(message.qos)
    assert cells[4].split()[0] == ("yes" if message.retained else "no")
    assert f"message `{message.name}`" in cells[2]
    lead = " ".join(reference_sections()[message.name].strip().split("\n\n")[0].split())
    assert f"`{message.topic}`, {message.direction}, QoS {message.qos}" in lead
    assert ("not retained" not in lead) == message.retained


@pytest.mark.parametrize(
    "message", [m for m in MESSAGES if m.encoding == "json"], ids=lambda m: m.name
)
def test_the_reference_examples_are_accepted_by_the_reader(message: Message) -> None:
    blocks = re.findall(r"```json\n(.*?)```", reference_sections()[message.name], re.S)
    assert len(blocks) == 1, f"{message.name}: one example"
    payload = blocks[0].replace("<sha256>", "ab" * 32).encode()
    model = message.model
    parsed: WireMessage
    if isinstance(model, type) and issubclass(model, DeviceReport):
        parsed = model.parse(payload, "cam-1")
    elif model is FieldDataSettings or model is FieldAck:  # server -> device messages
        parsed = model.parse(payload)
    elif model is ShadowRequest:
        parsed = ShadowRequest.parse(payload)
    else:
        assert model is ChunkMeta
        parsed = ChunkMeta.parse(payload)
    assert parsed.to_dict() == json.loads(payload)  # every field of the example is a real one


def test_availability_is_documented_as_text() -> None:
    section = reference_sections()["availability"]
    assert all(f"`{value.value}`" in section for value in Availability)
