"""The simulator is an independent peer: its contract is its own, and it agrees with the official OpenAPI.

- bridge/simulator imports nothing from the client (bridge.gateway) or the publisher (bridge.publish);
- its value sets and request schema (bridge.simulator.valuesets, .contract) agree with
  ../shared/reference/gateway/swagger_gtw.yaml: each value set a subset of the OpenAPI's enum (the
  national dispatcher refuses LET, PRO, COL), the same fields, required fields, lengths, item limits,
  content types and paths; the client's value sets too;
- the wire oracle (tests/oracles) that checks every request a GatewayClient sends in the suite
  catches a value the OpenAPI lacks, as the simulator does.
"""

import ast
from pathlib import Path

import pytest
import pytest_twisted

from bridge.errors import InvalidValue
from bridge.gateway import bodies, valuesets as client_valuesets
from bridge.simulator import contract, valuesets

from fse_helpers import SPEC
from gateway_kit import aio, doc_id, make_client, signed_package, submission
from oracles import openapi
from sim_requests import RawSender, create_body, metadata_body, under_base

SIMULATOR = Path(__file__).resolve().parents[2] / "bridge" / "simulator"
FORBIDDEN = ("bridge.gateway", "bridge.publish")
SCHEMAS = {"create": "ValidateAndCreateDTO", "replace": "PublicationUpdateReqDTO",
           "metadata": "PublicationMetadataReqDTO"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_simulator_imports_nothing_from_the_client():
    files = sorted(SIMULATOR.glob("*.py"))
    assert len(files) >= 8
    found = {(path.name, name) for path in files for name in imported_modules(path)
             if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)}
    assert found == set()


def test_the_import_check_sees_a_function_level_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from bridge.gateway.bodies import description_ok\n")
    assert "bridge.gateway.bodies" in imported_modules(probe)


def props(op: str) -> dict:
    return openapi.component(SCHEMAS[op])["properties"]


def official_enum(name: str) -> frozenset:
    enums = {frozenset(openapi.component(s)["properties"][name]["enum"]) for s in SCHEMAS.values()
             if name in openapi.component(s)["properties"]}
    assert len(enums) == 1, f"{name}: the DTOs disagree"
    return enums.pop()


ENUM_FIELDS = {"tipologiaStruttura": "FACILITY_TYPES", "tipoDocumentoLivAlto": "CLASS_CODES",
               "assettoOrganizzativo": "PRACTICE_SETTINGS", "tipoAttivitaClinica": "CLINICAL_ACTIVITIES",
               "healthDataFormat": "HEALTH_DATA_FORMATS", "mode": "MODES"}


@pytest.mark.parametrize("name", sorted(ENUM_FIELDS))
def test_each_simulator_value_set_is_within_the_openapi_enum(name):
    ours = getattr(valuesets, ENUM_FIELDS[name])
    assert contract.ENUMS[name] is ours
    assert ours and ours <= official_enum(name), sorted(ours - official_enum(name))


def test_the_enum_fields_are_the_openapi_ones():
    for op in SCHEMAS:
        with_enum = {n for n, p in props(op).items() if "enum" in p}
        assert with_enum == set(contract.ENUMS) & set(props(op)), op


def test_administrative_requests_within_the_openapi_item_enum():
    items = props("create")["administrativeRequest"]["items"]
    assert contract.ARRAY_ITEMS["administrativeRequest"] is valuesets.ADMINISTRATIVE_REQUESTS
    assert valuesets.ADMINISTRATIVE_REQUESTS <= frozenset(items["enum"])


def test_dsp_refuses_class_codes_the_openapi_lists():
    assert official_enum("tipoDocumentoLivAlto") - valuesets.CLASS_CODES == {"LET", "PRO", "COL"}


def test_practice_settings_are_exactly_the_openapi_enum():
    assert valuesets.PRACTICE_SETTINGS == official_enum("assettoOrganizzativo")
    assert not {"AD_PSC150", "AD_PSC016"} & valuesets.PRACTICE_SETTINGS


@pytest.mark.parametrize("name, client_set", [
    ("tipologiaStruttura", client_valuesets.FACILITY_TYPES),
    ("tipoDocumentoLivAlto", client_valuesets.CLASS_CODES),
    ("assettoOrganizzativo", client_valuesets.PRACTICE_SETTINGS),
    ("tipoAttivitaClinica", client_valuesets.CLINICAL_ACTIVITIES),
])
def test_each_client_value_set_is_within_the_openapi_enum(name, client_set):
    assert client_set <= official_enum(name), sorted(client_set - official_enum(name))


@pytest.mark.parametrize("code", ["AD_PSC150", "AD_PSC016"])
def test_the_client_refuses_practice_settings_the_openapi_lacks(code):
    assert not client_valuesets.PRACTICE_SETTING.match(code)
    with pytest.raises(InvalidValue, match="assettoOrganizzativo"):
        bodies.create_body(submission(practice_setting=code))


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_fields_and_required_fields_agree(op):
    schema = openapi.component(SCHEMAS[op])
    assert schema["additionalProperties"] is False
    assert contract.BODY_FIELDS[op] == set(schema["properties"])
    assert contract.REQUIRED_FIELDS[op] == set(schema["required"])


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_lengths_and_item_limits_agree(op):
    for name, prop in props(op).items():
        # The OpenAPI gives no format or pattern for a body field: the simulator's formats (dates,
        # Toscana ids: gateway.md sections 4, 5) only narrow it. A format added upstream shows here.
        assert not {"format", "pattern"} & set(prop) and not {"format", "pattern"} & set(prop.get("items", {}))
        if prop["type"] == "string":
            assert contract.MAX_LENGTHS.get(name) == prop.get("maxLength"), name
        else:
            assert prop["type"] == "array"
            assert contract.MAX_ITEMS[name] == prop["maxItems"], name
            assert contract.ITEM_MAX_LENGTHS.get(name) == prop["items"].get("maxLength"), name


def test_path_id_limit_and_content_types_agree():
    for method, template, op, source in contract.ROUTES:
        if source == "RT":
            continue
        found = openapi.find_operation(method, "/" + template)
        assert found is not None and found[1]["operationId"] == source, (method, template)
        operation = found[1]
        for parameter in operation.get("parameters", []):
            assert parameter["in"] == "path" and parameter["required"]
            assert parameter["schema"]["maxLength"] == contract.PATH_ID_MAX
            assert parameter["schema"]["minLength"] == 1
        body = operation.get("requestBody")
        if op == "delete":
            assert body is None
            continue
        assert set(body["content"]) == {contract.CONTENT_TYPES[op]}
        schema = openapi.resolve(body["content"][contract.CONTENT_TYPES[op]]["schema"])
        if contract.CONTENT_TYPES[op] == "multipart/form-data":
            assert set(schema["properties"]) == set(schema["required"]) == contract.MULTIPART_PARTS
            assert schema["properties"]["requestBody"]["$ref"].endswith("/" + SCHEMAS[op])
            assert schema["properties"]["file"]["format"] == "binary"
        else:
            assert schema == openapi.component(SCHEMAS[op])


def test_every_operation_has_an_official_path_and_the_region_paths_are_gateway_md_s():
    official = {op for _, _, op, source in contract.ROUTES if source != "RT"}
    assert official == {"create", "replace", "metadata", "delete"}
    gateway_md = (SPEC / "gateway.md").read_text(encoding="utf-8")
    for method, template, _, source in contract.ROUTES:
        if source == "RT":
            assert (method, "/" + template) in openapi.REGION_ALIASES
    assert "| metadata update | PUT | `documents/{id}/metadata`" in gateway_md
    assert "production delete URL as `.../gateway/v2/{identificativoDocUpdate}`" in gateway_md
    assert contract.REGION_BASE_PATH in gateway_md
    assert contract.NATIONAL_BASE_PATH.rstrip("/") in gateway_md


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_the_tests_own_valid_bodies_match_the_openapi(op):
    body = metadata_body(("P99",)) if op == "metadata" else create_body(doc_id(), ("P99",))
    assert openapi._errors(op, openapi.component(SCHEMAS[op]), body) == []


# --------------------------------------------------------------------------- the wire oracle

def multipart(body: dict) -> tuple[str, bytes]:
    import json

    boundary = "b0undary"
    text = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"requestBody\"\r\n\r\n"
            f"{json.dumps(body)}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"x.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.7\r\n--{boundary}--\r\n")
    return f"multipart/form-data; boundary={boundary}", text.encode()


@pytest.mark.parametrize("method, path, change, expected", [
    ("POST", "/documents/validate-and-create", {}, None),
    ("POST", "/documents/validate-and-create", {"assettoOrganizzativo": "AD_PSC150"}, "is not one of"),
    ("POST", "/documents/validate-and-create", {"priorita": True}, "Additional properties"),
    ("POST", "/documents/validate-and-create", {"identificativoRep": None}, "is not of type"),
    ("POST", "/documents/validate-and-create", {"identificativoSottomissione": "1" * 101}, "is too long"),
    ("PUT", "/documents/%5E" + "x" * 256, {}, "is too long"),
    ("POST", "/documents/validate", {}, "no such operation"),
])
def test_the_oracle_judges_a_multipart_request(method, path, change, expected):
    body = {**create_body(doc_id()), **change}
    content_type, data = multipart(body)
    problems = openapi.check_request(method, path, content_type, data)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_the_oracle_wants_the_body_as_a_plain_field_and_the_file_part():
    content_type, data = multipart(create_body(doc_id()))
    as_file = data.replace(b'name="requestBody"', b'name="requestBody"; filename="b.json"')
    assert any("file part" in p for p in openapi.check_request("POST", "/documents/validate-and-create",
                                                               content_type, as_file))
    no_file = data.replace(b'name="file"', b'name="other"')
    problems = openapi.check_request("POST", "/documents/validate-and-create", content_type, no_file)
    assert any("'file' missing" in p for p in problems) and any("unknown part 'other'" in p for p in problems)


def test_the_oracle_checks_json_metadata_and_an_empty_delete():
    import json

    good = json.dumps(metadata_body()).encode()
    assert openapi.check_request("PUT", "/documents/a%5Eb/metadata", "application/json", good) == []
    assert openapi.check_request("PUT", "/documents/a%5Eb/metadata-iti-57", "application/json", good) == []
    assert openapi.check_request("PUT", "/documents/a%5Eb/metadata", "text/plain", good)
    assert openapi.check_request("DELETE", "/documents/a%5Eb", None, b"") == []
    assert openapi.check_request("DELETE", "/a%5Eb", None, b"") == []
    assert openapi.check_request("DELETE", "/documents/a%5Eb", None, b"{}")


@pytest_twisted.ensureDeferred
async def test_a_wrong_client_value_set_fails_the_suite(monkeypatch, config, simulator, fake_sleep,
                                                        sign_credential, package, openapi_checked_requests):
    """A client whose practice settings let AD_PSC150 through: the simulator refuses the request and the
    wire oracle records the mismatch (which would fail this test at teardown: cleared here after the check)."""
    widened = client_valuesets.PRACTICE_SETTINGS | {"AD_PSC150"}
    monkeypatch.setattr(client_valuesets, "PRACTICE_SETTINGS", widened)
    monkeypatch.setattr(client_valuesets, "PRACTICE_SETTING", client_valuesets.re.compile(r"^AD_PSC[0-9]{3}$"))
    client = make_client(config, simulator, fake_sleep, sign_credential)
    result = await aio(client.create(submission(practice_setting="AD_PSC150"), package))
    assert result.status == 400 and result.problem["type"] == "/msg/mandatory-element"
    assert "assettoOrganizzativo" in result.problem["detail"]
    mismatches = list(openapi_checked_requests.mismatches)
    assert openapi_checked_requests.checked == 1
    assert len(mismatches) == 1 and "assettoOrganizzativo" in mismatches[0] and "AD_PSC150" in mismatches[0]
    openapi_checked_requests.mismatches.clear()


@pytest_twisted.ensureDeferred
async def test_every_client_request_is_checked(config, simulator, fake_sleep, sign_credential, package, pki,
                                               openapi_checked_requests):
    client = make_client(config, simulator, fake_sleep, sign_credential)
    second = doc_id("A26-00412_2")
    fresh = "2.16.840.1.113883.2.9.2.90.4.3.{}".format
    assert (await aio(client.create(submission(), package))).status == 202
    assert (await aio(client.replace(doc_id(), submission(document_id=second, submission_id=fresh(2)),
                                     signed_package(pki, local="A26-00412_2")))).status == 202
    assert (await aio(client.metadata(submission(document_id=second, submission_id=fresh(3))))).status == 200
    assert (await aio(client.delete(submission(document_id=second)))).status == 200
    assert openapi_checked_requests.checked == 4 and openapi_checked_requests.mismatches == []


@pytest.mark.parametrize("template, status", [
    ("documents/{id}/metadata-iti-57", 200),    # the OpenAPI's
    ("documents/{id}/metadata", 200),           # the Region's
    ("documents/{id}/update", 404),             # nobody's: a client configured so is not served
])
@pytest_twisted.ensureDeferred
async def test_the_simulator_serves_the_official_and_region_paths(template, status, config, simulator, package,
                                                                   sign_credential, pki):
    sender = RawSender(simulator, config, sign_credential, pki)
    created = await aio(sender.send(sender.spec("create", package)))
    assert created.status_code == 202
    assert openapi.check_response("POST", under_base(created), 202, created.content) == []
    response = await aio(sender.send(sender.spec("metadata"), template))
    assert response.status_code == status, response.json()
    if status == 200:
        assert openapi.check_response("PUT", under_base(response), 200, response.content) == []
    assert bool(openapi.check_request("PUT", "/" + template.replace("{id}", "a%5Eb"), "application/json",
                                      b"{}")) is True  # the oracle: {} lacks the required fields
    assert any("no such operation" in p for p in openapi.check_request(
        "PUT", "/" + template.replace("{id}", "a%5Eb"), "application/json", b"{}")) is (status == 404)


@pytest_twisted.ensureDeferred
async def test_the_region_production_delete_path_is_served(config, simulator, package, sign_credential, pki):
    sender = RawSender(simulator, config, sign_credential, pki)
    assert (await aio(sender.send(sender.spec("create", package)))).status_code == 202
    deleted = await aio(sender.send(sender.spec("delete"), "{id}"))
    assert deleted.status_code == 200
    assert openapi.check_response("DELETE", under_base(deleted), 200, deleted.content) == []
    assert (await aio(sender.send(sender.spec("delete"), "documents/{id}"))).status_code == 404


def test_the_response_oracle_judges_status_and_body():
    good = b'{"traceID": "a", "spanID": "b", "workflowInstanceId": "w"}'
    assert openapi.check_response("POST", "/documents/validate-and-create", 202, good) == []
    assert openapi.check_response("POST", "/documents/validate-and-create", 200, good)  # V&C answers 202
    assert openapi.check_response("DELETE", "/documents/a%5Eb", 200, b'{"traceID": "a", "extra": 1}')
    problem = b'{"type": "/msg/id-doc", "title": "t", "status": 400, "instance": "/x", "workflowInstanceId": "w"}'
    assert openapi.check_response("POST", "/documents/validate-and-create", 400, problem) == []
    assert openapi.check_response("PUT", "/documents/a%5Eb", 400, problem)  # no workflowInstanceId on replace
    govway = b'{"type": "https://govway.org/handling-errors/401/TokenExpired.html", "govway_id": "x"}'
    assert openapi.check_response("DELETE", "/documents/a%5Eb", 401, govway) == []


@pytest_twisted.ensureDeferred
async def test_the_national_base_path_is_served_too(config, simulator, package, sign_credential, pki):
    import dataclasses

    national = dataclasses.replace(simulator, url=simulator.url.replace(contract.REGION_BASE_PATH,
                                                                        contract.NATIONAL_BASE_PATH))
    assert national.url.endswith("/govway/rest/in/FSE/gateway/v1/")
    sender = RawSender(national, config, sign_credential, pki)
    assert (await aio(sender.send(sender.spec("create", package)))).status_code == 202
    assert (await aio(sender.send(sender.spec("delete"), "documents/{id}"))).status_code == 200
