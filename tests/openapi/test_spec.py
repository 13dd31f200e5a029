"""blueprints/openapi.yaml is true: it names exactly the app's /api routes, it is valid
OpenAPI 3.1 with valid JSON Schemas, and GET /api/openapi.json serves it, to anyone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
import yaml
from flask import Flask

from blueprints.openapi import SPEC_PATH, load_spec
from tests.openapi.conftest import KNOWN_CUSTOMERS

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# Flask adds these to every rule itself; the spec documents the methods views answer.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
# JSON Schema 2020-12 keywords (and OpenAPI's own) we may use: anything else is a typo that
# validators would silently ignore, leaving a response unchecked.
SCHEMA_KEYWORDS = {
    "$ref", "$comment", "type", "enum", "const", "format", "pattern", "minLength", "maxLength",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "properties",
    "required", "additionalProperties", "patternProperties", "propertyNames", "minProperties",
    "maxProperties", "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "oneOf",
    "anyOf", "allOf", "not", "title", "description", "default", "examples", "deprecated",
    "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "discriminator",
}  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def api_operations(app: Flask) -> set[tuple[str, str]]:
    """(path, METHOD) of every /api rule, with ``<converter:name>`` written ``{name}``."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
            found |= {(path, method) for method in (rule.methods or set()) - IMPLICIT_METHODS}
    return found


def spec_operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def test_the_spec_documents_every_api_route_and_nothing_else(app, spec):
    routes = api_operations(app)
    documented = {(path, method.upper()) for path, method, _ in spec_operations(spec)}
    assert routes - documented == set(), "routes missing from blueprints/openapi.yaml"
    assert documented - routes == set(), "documented operations the app does not have"


def test_each_path_declares_exactly_its_path_parameters(spec):
    for path, method, operation in spec_operations(spec):
        declared = [
            resolve(spec, parameter)
            for parameter in spec["paths"][path].get("parameters", [])
            + operation.get("parameters", [])
        ]
        in_path = {p["name"] for p in declared if p["in"] == "path"}
        assert in_path == set(re.findall(r"{([^}]+)}", path)), f"{method.upper()} {path}"
        assert all(p["required"] for p in declared if p["in"] == "path")


def test_the_document_is_valid_openapi_3_1(spec):
    loaded = schemathesis.openapi.from_dict(spec, config=schemathesis.Config())
    loaded.validate()  # against the OpenAPI 3.1 schema (which leaves Schema Objects alone)
    assert spec["openapi"].startswith("3.1.")


def test_every_schema_object_is_valid_json_schema_with_known_keywords_only(spec):
    schemas = list(schema_objects(spec))
    assert len(schemas) > 50
    for where, schema in schemas:
        jsonschema_rs.meta.validate(schema)
        unknown = set(schema) - SCHEMA_KEYWORDS
        assert not unknown, f"{where}: unknown keywords {sorted(unknown)}"


def test_every_reference_resolves_and_operation_ids_are_unique(spec):
    for ref in references(spec):
        assert resolve(spec, {"$ref": ref}) is not None, ref
    ids = [operation["operationId"] for _, _, operation in spec_operations(spec)]
    assert len(ids) == len(set(ids))


def test_every_error_response_is_the_error_envelope(spec):
    for path, method, operation in spec_operations(spec):
        responses = operation["responses"]
        if operation.get("security", spec["security"]):
            assert "401" in responses, f"{method.upper()} {path}: no 401"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                content = resolve(spec, response)["content"]
                assert set(content) == {"application/json"}, f"{method.upper()} {path} {status}"
                assert content["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }


def test_the_customer_id_examples_are_the_seeded_customers(spec):
    examples = spec["components"]["parameters"]["CustomerId"]["examples"]
    assert {each["value"] for each in examples.values()} == set(KNOWN_CUSTOMERS)


@pytest.mark.smoke
def test_the_document_is_served_as_json_to_anyone_and_cached(client):
    response = client.get("/api/openapi.json")  # no session token

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    with SPEC_PATH.open(encoding="utf-8") as file:
        assert response.get_json() == yaml.safe_load(file)
    assert client.get("/api/openapi.json").get_data() == response.get_data()


# -- walking the document -------------------------------------------------------------------


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> Any:
    """``node`` itself, or what its ``$ref`` (a local JSON pointer) points at."""
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/"), ref
    target: Any = spec
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def schema_objects(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Schema Object in the document (and each one nested in it), with where it is."""
    roots: list[tuple[str, Any]] = list(_named(spec["components"].get("schemas", {}), "schemas"))
    for section in ("parameters", "headers"):
        for name, item in spec["components"].get(section, {}).items():
            roots.append((f"{section}/{name}", item.get("schema")))
    for name, response in spec["components"].get("responses", {}).items():
        roots += _content_schemas(response, f"responses/{name}")
        for header, value in response.get("headers", {}).items():
            roots.append((f"responses/{name}/{header}", value.get("schema")))
    for path, method, operation in spec_operations(spec):
        where = f"{method.upper()} {path}"
        for parameter in spec["paths"][path].get("parameters", []) + operation.get(
            "parameters", []
        ):
            roots.append((f"{where} {parameter.get('name')}", parameter.get("schema")))
        roots += _content_schemas(operation.get("requestBody", {}), f"{where} body")
        for status, response in operation["responses"].items():
            roots += _content_schemas(response, f"{where} {status}")
            for header, value in response.get("headers", {}).items():
                roots.append((f"{where} {status} {header}", value.get("schema")))
    for where, schema in roots:
        if schema is not None:
            yield from _nested(schema, where)


def _named(mapping: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for name, value in mapping.items():
        yield f"{prefix}/{name}", value


def _content_schemas(holder: dict[str, Any], where: str) -> list[tuple[str, Any]]:
    return [
        (f"{where} {media}", media_type.get("schema"))
        for media, media_type in holder.get("content", {}).items()
    ]


def _nested(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield where, schema
    for name, value in schema.get("properties", {}).items():
        yield from _nested(value, f"{where}.{name}")
    for keyword in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(keyword), dict):
            yield from _nested(schema[keyword], f"{where}/{keyword}")
    for keyword in ("oneOf", "anyOf", "allOf", "prefixItems"):
        for index, value in enumerate(schema.get(keyword, [])):
            yield from _nested(value, f"{where}/{keyword}/{index}")
