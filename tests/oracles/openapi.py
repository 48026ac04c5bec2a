"""The official gateway OpenAPI as a test oracle: does a request on the wire match it?

Reads ../shared/reference/gateway/swagger_gtw.yaml (PyYAML) and checks a
request's method and path, path parameter, content type, multipart parts and
JSON body against the operation's schemas (jsonschema), independently of
bridge.gateway (the client) and bridge.simulator (the peer).

The only paths not in the OpenAPI are the Region's (gateway.md section 1):
``documents/{idDoc}/metadata`` (RT, IG and DSP; the OpenAPI lists only the
transitional ``metadata-iti-57``, same body) and RT section 4.2's production
delete ``{idDoc}``. They are checked as those operations.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import json
import re
from urllib.parse import unquote

import jsonschema
import yaml

from shared_data import REFERENCE

SWAGGER = REFERENCE / "gateway" / "swagger_gtw.yaml"

#: The Region's paths (gateway.md section 1) -> the OpenAPI path with the same operation.
REGION_ALIASES = {("PUT", "/documents/{idDoc}/metadata"): "/documents/{idDoc}/metadata-iti-57",
                  ("DELETE", "/{idDoc}"): "/documents/{idDoc}"}


@functools.cache
def spec() -> dict:
    return yaml.safe_load(SWAGGER.read_text(encoding="utf-8"))


def component(name: str) -> dict:
    return spec()["components"]["schemas"][name]


def resolve(schema: dict) -> dict:
    """A ``$ref`` to a component schema, followed (the only kind the file uses)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    return component(ref[len(prefix):])


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(template)) + "$")


def find_operation(method: str, path: str) -> tuple[str, dict, str | None] | None:
    """(OpenAPI path, operation, raw path parameter) of ``METHOD /path`` (path under the base)."""
    method = method.upper()
    paths = spec()["paths"]
    candidates = [(t, t) for t in paths] + [(alias, target) for (m, alias), target in REGION_ALIASES.items()
                                            if m == method]
    # Literal paths first: documents/validate-and-create is not documents/{idDoc}.
    candidates.sort(key=lambda c: (c[0].count("{"), -len(c[0])))
    for template, target in candidates:
        match = _template_regex(template).match(path)
        operation = paths[target].get(method.lower()) if match else None
        if operation is not None:
            return target, operation, (match.group(1) if match.groups() else None)
    return None


def check_request(method: str, path: str, content_type: str | None, body: bytes) -> list[str]:
    """Every way the request departs from the OpenAPI (empty: it matches)."""
    found = find_operation(method, path)
    if found is None:
        return [f"{method} {path}: no such operation in the OpenAPI"]
    template, operation, raw_id = found
    where = f"{operation['operationId']} ({method} {template})"
    problems = []
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = unquote(raw_id or "")
            problems += [f"{where}: path {parameter['name']}: {e.message}"
                         for e in _validator(parameter["schema"]).iter_errors(value)]
    request_body = operation.get("requestBody")
    if request_body is None:
        if body:
            problems.append(f"{where}: the operation has no body, {len(body)} bytes were sent")
        return problems
    media = (content_type or "").split(";")[0].strip().lower()
    content = request_body["content"]
    if media not in content:
        return problems + [f"{where}: Content-Type {media or '(none)'} is not one of {sorted(content)}"]
    schema = resolve(content[media]["schema"])
    if media == "application/json":
        try:
            document = json.loads(body)
        except ValueError:
            return problems + [f"{where}: the body is not JSON"]
        return problems + _errors(where, schema, document)
    return problems + _check_multipart(where, schema, content_type, body)


def _check_multipart(where: str, schema: dict, content_type: str, body: bytes) -> list[str]:
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        return [f"{where}: not a multipart body"]
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = part
    problems = [f"{where}: part {name!r} missing" for name in schema.get("required", []) if name not in parts]
    if schema.get("additionalProperties") is False:
        problems += [f"{where}: unknown part {name!r}" for name in parts if name not in schema["properties"]]
    for name, part in parts.items():
        declared = schema["properties"].get(name)
        if declared is None:
            continue
        payload = part.get_payload(decode=True) or b""
        if declared.get("format") == "binary":
            # The file is the signed PDF: the OpenAPI's "maxLength: 1000" on a binary part is
            # generator noise (no PDF/A fits in 1000 bytes), so only its presence is checked.
            continue
        target = resolve(declared)
        if part.get_param("filename", header="content-disposition") is not None:
            problems.append(f"{where}: part {name!r} is a file part, the gateway reads a plain field")
        try:
            document = json.loads(payload.decode(part.get_content_charset() or "utf-8"))
        except ValueError:
            problems.append(f"{where}: part {name!r} is not JSON")
            continue
        problems += _errors(f"{where} part {name!r}", target, document)
    return problems


@functools.cache
def _cached_validator(key: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(json.loads(key))


def _validator(schema: dict) -> jsonschema.Draft4Validator:
    # OpenAPI 3.0 schema objects are a JSON Schema draft 4 dialect (type, enum, required,
    # maxLength, maxItems, additionalProperties: all the file uses for requests).
    return _cached_validator(json.dumps(schema, sort_keys=True))


def _errors(where: str, schema: dict, document) -> list[str]:
    return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in _validator(schema).iter_errors(document)]


GOVWAY_TYPE = "https://govway.org/handling-errors/"


def check_response(method: str, path: str, status: int, body: bytes) -> list[str]:
    """Every way an answer departs from the OpenAPI: its status among the operation's, its JSON body
    the schema of that status. GovWay's own errors (the front end, gateway.md section 8) are not the
    API's: only their status is checked."""
    found = find_operation(method, path)
    if found is None:
        return [f"{method} {path}: no such operation in the OpenAPI"]
    template, operation, _ = found
    where = f"{operation['operationId']} ({method} {template}) answered {status}"
    responses = operation["responses"]
    declared = responses.get(str(status))
    if declared is None:
        return [f"{where}: the OpenAPI lists only {sorted(responses)}"]
    try:
        document = json.loads(body)
    except ValueError:
        return [f"{where}: the body is not JSON"]
    if isinstance(document, dict) and str(document.get("type", "")).startswith(GOVWAY_TYPE):
        return []
    (_, media), = declared["content"].items()
    return _errors(where, resolve(media["schema"]), document)
