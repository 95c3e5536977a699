"""The API's OpenAPI schema tells the truth: schemathesis generates requests from it, the app answers them.

Reference: the app's own /openapi.json, checked by schemathesis (no 5xx, documented status codes, content
types and response bodies that conform). Training is not started (it would run for seconds per case).
"""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (the test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from cnnlab.web.app import create_app  # noqa: E402

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


@pytest.fixture(scope="module")
def app(tmp_path_factory, trained):
    import web_support
    runs = web_support.runs_dir_with_tiny_run(tmp_path_factory.mktemp("openapi"), trained)
    return create_app(runs_dir=runs, host="0.0.0.0")  # any Host: schemathesis' client says "testserver"


def test_the_app_answers_what_its_schema_says(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/api/train", method="POST")
    tested = []
    for result in schema.exclude(path="/api/train/events").get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            case.call_and_validate(checks=CHECKS)

        check()
    assert len(tested) >= 10, tested


def test_every_route_documents_the_guards_statuses(app):
    paths = app.openapi()["paths"]
    for path, methods in paths.items():
        for method, op in methods.items():
            documented = set(op["responses"])
            assert "400" in documented, (method, path)
            if method == "post":
                assert {"403", "408", "411", "413"} <= documented, (path, documented)
    train = paths["/api/train"]["post"]
    body = app.openapi()["components"]["schemas"]["TrainRequest"]["properties"]
    model = next(part for part in body["model"]["anyOf"] if part.get("type") == "string")  # or null: the plan's
    assert {"409", "422"} <= set(train["responses"]) and model["minLength"] == 1
    assert {"503", "415"} <= set(paths["/api/predict"]["post"]["responses"])
