"""APIG event parsing, response shape and the router (pure logic)."""

import base64
import json

import pytest

from common.apig import ApigRequest, build_event, json_response, response_body
from common.errors import NotFound
from common.router import Router

DOCUMENTED_EVENT = {
    "body": base64.b64encode(b'{"device_id": "d1", "temp": 21.5}').decode(),
    "requestContext": {"apiId": "bc1d", "requestId": "11cdcdcf", "stage": "RELEASE"},
    "queryStringParameters": {"responseType": "html"},
    "httpMethod": "GET",
    "pathParameters": {},
    "headers": {"Content-Type": "application/json", "x-real-ip": "103.218.216.98"},
    "path": "/",
    "isBase64Encoded": True,
}


def assert_apig_response(response):
    assert set(response) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert isinstance(response["statusCode"], int)
    assert isinstance(response["headers"], dict)
    assert isinstance(response["body"], str)
    assert isinstance(response["isBase64Encoded"], bool)


def test_documented_event_is_read():
    request = ApigRequest.from_event(DOCUMENTED_EVENT)
    assert request.method == "GET"
    assert request.json() == {"device_id": "d1", "temp": 21.5}
    assert request.headers["content-type"] == "application/json"
    assert request.content_type == "application/json"
    assert request.query == {"responseType": "html"}
    assert request.request_id == "11cdcdcf"


def test_base64_flag_over_plain_text_falls_back_to_the_text():
    event = dict(DOCUMENTED_EVENT, body='{"a": 1}')
    assert ApigRequest.from_event(event).json() == {"a": 1}
    event = dict(DOCUMENTED_EVENT, body='{"a": 2}', isBase64Encoded=False)
    assert ApigRequest.from_event(event).json() == {"a": 2}


def test_repeated_query_keys_take_the_first_value():
    event = dict(DOCUMENTED_EVENT, queryStringParameters={"limit": ["5", "7"]})
    assert ApigRequest.from_event(event).query == {"limit": "5"}


def test_build_event_round_trips():
    event = build_event("post", "/x", headers={"X-Device-Token": "t"}, body=b"abc", query={"q": "1"})
    request = ApigRequest.from_event(event)
    assert (request.method, request.path, request.body, request.query) == ("POST", "/x", b"abc", {"q": "1"})
    assert request.headers == {"x-device-token": "t"}
    assert event["isBase64Encoded"] is True


def make_router():
    app = Router()

    @app.get("/api/device/{device_id}/latest")
    def latest(request, device_id):
        return {"device_id": device_id}

    @app.post("/api/device/data")
    def submit(request):
        raise NotFound("nope")

    @app.get("/boom")
    def boom(request):
        raise RuntimeError("secret detail")

    return app


def test_router_matches_path_parameters_and_prefers_apig_values():
    app = make_router()
    response = app.resolve(build_event("GET", "/api/device/abc/latest"))
    assert_apig_response(response)
    assert json.loads(response["body"]) == {"device_id": "abc"}
    response = app.resolve(build_event("GET", "/api/device/abc/latest", path_params={"device_id": "abc"}))
    assert json.loads(response["body"]) == {"device_id": "abc"}


def test_router_errors_are_json_with_status():
    app = make_router()
    response = app.resolve(build_event("GET", "/nowhere"))
    assert response["statusCode"] == 404 and "Not found" in json.loads(response["body"])["error"]
    response = app.resolve(build_event("DELETE", "/api/device/data"))
    assert response["statusCode"] == 405 and response["headers"]["Allow"] == "POST"
    response = app.resolve(build_event("POST", "/api/device/data"))
    assert (response["statusCode"], json.loads(response["body"])) == (404, {"error": "nope"})
    response = app.resolve(build_event("GET", "/boom"))
    assert response["statusCode"] == 500
    assert "secret detail" not in response["body"]


def test_cors_allows_any_origin_only_while_auth_is_off():
    from common import runtime
    from common.settings import Settings, SettingsError

    app = make_router()
    preflight = build_event("OPTIONS", "/api/device/data", headers={"Origin": "https://a.example"})
    try:
        runtime.initialize(settings=Settings(auth_enabled=False))
        response = app.resolve(preflight)
        assert response["statusCode"] == 204 and response["headers"]["Access-Control-Allow-Origin"] == "*"
        runtime.initialize(settings=Settings(auth_enabled=True, cors_origins="https://a.example/"))
        response = app.resolve(preflight)
        assert response["headers"]["Access-Control-Allow-Origin"] == "https://a.example"
        assert "Authorization" in response["headers"]["Access-Control-Allow-Headers"]
        other = build_event("OPTIONS", "/api/device/data", headers={"Origin": "https://b.example"})
        assert "Access-Control-Allow-Origin" not in app.resolve(other)["headers"]
        runtime.initialize(settings=Settings(auth_enabled=True))
        assert "Access-Control-Allow-Origin" not in app.resolve(preflight)["headers"]
    finally:
        runtime.reset()
    with pytest.raises(SettingsError, match="may not be"):
        Settings(auth_enabled=True, cors_origins="*")


def test_binary_responses_are_base64():
    from common.apig import Response

    response = Response(200, b"\x89PNG", content_type="image/png").to_apig()
    assert_apig_response(response)
    assert response["isBase64Encoded"] is True
    assert response_body(response) == b"\x89PNG"
    assert response_body(json_response({"a": 1}).to_apig()) == b'{"a": 1}'


def test_duplicate_json_keys_are_refused():
    import pytest

    from common.errors import BadRequest

    request = ApigRequest.from_event(build_event("POST", "/", body=b'{"value": 1, "value": 2}'))
    with pytest.raises(BadRequest, match="key 'value' more than once"):
        request.json()
    nested = ApigRequest.from_event(build_event("POST", "/", body=b'{"a": {"b": 1, "b": 2}}'))
    with pytest.raises(BadRequest, match="'b' more than once"):
        nested.json()
