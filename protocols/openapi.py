"""The HTTP API as an OpenAPI 3.1 document, generated from the schema types themselves."""

from __future__ import annotations

import msgspec

from protocols.limits import MAX_REQUEST_ID_CHARS, MAX_RETRY_AFTER_S, MIN_RETRY_AFTER_S, OUTPUT_FORMATS
from protocols.openai_images import (
    BODY_READ_S,
    RETRY_CANNOT_HELP,
    ErrorResponse,
    ImageGenerationRequest,
    ImagesResponse,
    Model,
    ModelList,
)

_REF = "#/components/schemas/{name}"


def _json_content(name: str) -> dict:
    return {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}


def _error(description: str) -> dict:
    return {"description": description, "content": _json_content("ErrorResponse")}


# read by OpenAI's clients, which retry every 5xx unless told not to
_NO_RETRY = {
    "x-should-retry": {
        "description": f"false with {', '.join(RETRY_CANNOT_HELP)}: a retry meets the same answer",
        "schema": {"type": "string", "enum": ["false"]},
    }
}


def _server_error(description: str) -> dict:
    return _error(description) | {"headers": _NO_RETRY}


# a request's id, the client's or one the engine made (engine/http_request_ids.py), said on every reply
_REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "this request's id, said back in the reply's X-Request-ID and named in the engine's log lines"
    " about it (one is made when none is sent); else a 400",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID_CHARS, "pattern": "^[ -~]+$"},
}
_WHOLE_SECONDS = {"type": "integer", "minimum": MIN_RETRY_AFTER_S, "maximum": MAX_RETRY_AFTER_S}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds: how long the engine takes to free the room this request needs",
        "schema": _WHOLE_SECONDS,
    }
}

# said with no_worker alone, and only when the engine has something to go by (engine/slot_supervision.py)
_WORKER_BACK = {
    "Retry-After": {
        "description": "with no_worker, while the engine's own workers are on their way back: whole seconds until the"
        " first should say hello, by its restart's backoff and how long its last worker took to start; absent when the"
        " engine has nothing to go by (none of its own workers has said hello yet, it has none, or none is to come"
        " back)",
        "schema": _WHOLE_SECONDS,
    }
}


def openapi_document(version: str, api_key: bool, public_url: str | None) -> dict:
    """`public_url`: where clients reach the API (--public-url), named as the document's server. Left out, OpenAPI
    takes "/" of the host the document was read from: behind a proxy that serves the engine under a path, every
    operation resolved outside it."""
    (_, components) = msgspec.json.schema_components(
        [ImageGenerationRequest, ImagesResponse, ErrorResponse, Model, ModelList], ref_template=_REF
    )
    guarded = [{"bearer": []}] if api_key else []
    generate = {
        "operationId": "createImage",
        "summary": "Generate images (OpenAI images API, with argus extensions)",
        "parameters": [_REQUEST_ID],
        "requestBody": {"required": True, "content": _json_content("ImageGenerationRequest")},
        "responses": {
            "200": {"description": "the images", "content": _json_content("ImagesResponse")},
            "400": _error("invalid input, naming the field"),
            "401": _error("missing or wrong API key"),
            "403": _error(
                "host_not_allowed: an engine on loopback without an API key answers only a Host naming it (localhost,"
                " a loopback address, a one-label name, or --public-url's host)"
            ),
            "408": _error(f"the body did not come whole within {BODY_READ_S:g} s"),
            "413": _error("body over the size limit"),
            "415": _error("a body not sent as Content-Type: application/json, or compressed (Content-Encoding)"),
            "429": _error("queue full; retry after the Retry-After header") | {"headers": _RETRY_AFTER},
            "500": _server_error("a worker failed on this request (worker_error), or the engine did (internal_error)"),
            "503": _server_error(
                "no worker can serve (no_worker, worker_lost), or the engine is stopping: shutting_down (refused) or"
                " cancelled (admitted, then cancelled when the drain ended)"
            )
            | {"headers": _NO_RETRY | _WORKER_BACK},
            "504": _server_error("the request's deadline (slo_ms) passed"),
        },
        "security": guarded,
    }
    plain_text = {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    any_json = {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}
    binary = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
    image_file = {
        "operationId": "getImageFile",
        "summary": "An image generated with response_format=url (kept for a while, no API key needed)",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "the image", "content": {f"image/{kind}": binary for kind in OUTPUT_FORMATS}},
            "404": _error(
                "no such image: it expired, was evicted early to make room for newer ones, or another engine process"
                " made it (this one restarted since, or another behind the same address)"
            ),
        },
        "security": [],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "argus", "version": version},
        **({"servers": [{"url": public_url, "description": "--public-url"}]} if public_url else {}),
        "paths": {
            "/v1/images/generations": {"post": generate},
            "/v1/images/files/{name}": {"get": image_file},
            "/health": {"get": {"operationId": "health", "responses": any_json, "security": []}},
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "responses": {**any_json, "503": {"description": "not ready"}},
                    "security": guarded,
                }
            },
            "/metrics": {"get": {"operationId": "metrics", "responses": plain_text, "security": guarded}},
            "/plan": {
                "get": {
                    "operationId": "plan",
                    "summary": "The controller's plan in force: workers per level and redirection",
                    "responses": {**any_json, "503": _error("no plan made yet")},
                    "security": guarded,
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "The one model this engine serves (the images endpoint echoes any model it is given)",
                    "responses": {"200": {"description": "ok", "content": _json_content("ModelList")}},
                    "security": guarded,
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "operationId": "retrieveModel",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "ok", "content": _json_content("Model")},
                        "404": _error("not the model this engine serves"),
                    },
                    "security": guarded,
                }
            },
            "/openapi.json": {"get": {"operationId": "openapi", "responses": any_json, "security": guarded}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
