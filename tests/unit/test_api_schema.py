"""Property-based tests of the REST API from its own OpenAPI schema (schemathesis).

Every operation gets generated inputs, valid and invalid, as an operator. Each
generated case is sent twice: as generated, and with its path pointing at real
objects (instance `eve`, organisation `acme`, member `bob`), so that the code
behind the 404s runs too. No input may cause a 5xx, and every answer must match
the schema: the documented status codes, content type and body.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
REAL = {"name": "eve", "slug": "acme", "username": "bob"}


@pytest.fixture
def world(people, running_instance, controller):
    running_instance("eve", organisation="acme")
    controller.heartbeat()
    return people


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_schema_conformance(case, world):
    headers = {"Authorization": f"Bearer {world.tokens['operator']}"}
    case.call_and_validate(headers=headers, checks=CHECKS)
    if case.path_parameters and any(key in REAL for key in case.path_parameters):
        case.path_parameters = {**case.path_parameters, **{k: v for k, v in REAL.items() if k in case.path_parameters}}
        case.call_and_validate(headers=headers, checks=CHECKS)


def test_schema_is_served_at_a_fixed_url():
    from django.test import Client

    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["version"] == "1"
    assert "/api/v1/instances/{name}/erase" in document["paths"]
    assert {"BearerToken", "Session"} <= set(document["components"]["securitySchemes"])
