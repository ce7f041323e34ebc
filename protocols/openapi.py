"""The HTTP API as an OpenAPI 3.1 document, generated from the schema types themselves."""

from __future__ import annotations

import msgspec

from protocols.limits import (
    BODY_BUDGET_BYTES,
    MAX_HEAD_BYTES,
    MAX_HEAD_LINE_BYTES,
    MAX_HEADERS,
    MAX_REQUEST_ID_CHARS,
    MAX_RETRY_AFTER_S,
    MIN_RETRY_AFTER_S,
    OUTPUT_FORMATS,
)
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


# a request's id, the client's or one the engine made (engine/http/request_ids.py), said on every reply
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

# said with no_worker, only when the engine has something to go by (engine/fleet/slot_supervision.py); and with
# too_many_connections, always
_WORKER_BACK = {
    "Retry-After": {
        "description": "with no_worker, while the engine's own workers are on their way back: whole seconds until the"
        " first should say hello, by its restart's backoff and how long its last worker took to start; absent when the"
        " engine has nothing to go by (none of its own workers has said hello yet, it has none, or none is to come"
        " back). With too_many_connections and too_many_bodies: 1",
        "schema": _WHOLE_SECONDS,
    }
}
# said with unsupported_encoding alone (RFC 7694, section 3: a 415 for the media type must not say it)
_NO_CODINGS = {
    "Accept-Encoding": {
        "description": "identity, with unsupported_encoding: the body is taken in no content coding",
        "schema": {"type": "string", "enum": ["identity"]},
    }
}
_CONNECTIONS_RETRY = {"Retry-After": {"description": "with too_many_connections: 1", "schema": _WHOLE_SECONDS}}


# what a request on any route may be answered before its route sees it (engine/http/api.py's middlewares, and
# engine/http/connection_limit.py and head_limit.py before the request is read): listed on each route, each where it
# applies
_BAD_REQUEST_ID = "an X-Request-ID that is none (see the parameter)"
_NO_KEY = "missing or wrong API key"
_HOST_NOT_ALLOWED = (
    "host_not_allowed: an engine on loopback without an API key answers only a Host naming it (localhost, a loopback"
    " address, a one-label name, or --public-url's host)"
)
_EXPECTATION_FAILED = "expectation_failed: an Expect other than 100-continue"
_HEADERS_TOO_LARGE = (
    f"headers_too_large: the request line and headers are over {MAX_HEAD_BYTES // 1024} KiB together, a line of them"
    f" over {MAX_HEAD_LINE_BYTES} bytes, or over {MAX_HEADERS} header fields"
)
_MALFORMED = "malformed_request: a message that is not HTTP/1.1 the engine can parse"
_TOO_MANY_CONNECTIONS = (
    "too_many_connections: the engine holds as many HTTP connections as it takes (--max-connections); retry after the"
    " Retry-After header"
)


def openapi_document(version: str, api_key: bool, host_checked: bool, public_url: str | None) -> dict:
    """`api_key`: every route but /health and the image URLs needs one (a 401 without). `host_checked`: an engine on
    loopback without an API key, which answers a Host that does not name it 403. `public_url`: where clients reach
    the API (--public-url), named as the document's server. Left out, OpenAPI takes "/" of the host the document was
    read from: behind a proxy that serves the engine under a path, every operation resolved outside it."""
    (_, components) = msgspec.json.schema_components(
        [ImageGenerationRequest, ImagesResponse, ErrorResponse, Model, ModelList], ref_template=_REF
    )

    def answered(operation: dict, keyed: bool = True, probe: bool = False) -> dict:
        """`operation` with what its requests may be answered before it sees them. `keyed`: it needs the API key;
        `probe`: an X-Request-ID that is none is replaced, not refused (a probe must not fail for what a proxy adds)."""
        door = {
            "400": _MALFORMED if probe else f"{_BAD_REQUEST_ID}; or {_MALFORMED}",
            "401": _NO_KEY if keyed and api_key else None,
        }
        door |= {"403": _HOST_NOT_ALLOWED if host_checked else None, "417": _EXPECTATION_FAILED}
        door |= {"431": _HEADERS_TOO_LARGE, "503": _TOO_MANY_CONNECTIONS}
        responses = dict(operation["responses"])
        for status, why in door.items():
            if why is None:
                continue
            own = responses.get(status)
            said = own | {"description": f"{own['description']}; or {why}"} if own else _error(why)
            # the route's own Retry-After, where it has one, says too_many_connections's too
            responses[status] = (
                said | {"headers": _CONNECTIONS_RETRY | said.get("headers", {})} if status == "503" else said
            )
        parameters = operation.get("parameters", []) + ([] if probe else [_REQUEST_ID])
        security = [{"bearer": []}] if keyed and api_key else []
        return operation | {
            "parameters": parameters,
            "responses": dict(sorted(responses.items())),
            "security": security,
        }

    generate = {
        "operationId": "createImage",
        "summary": "Generate images (OpenAI images API, with argus extensions)",
        "requestBody": {"required": True, "content": _json_content("ImageGenerationRequest")},
        "responses": {
            "200": {"description": "the images", "content": _json_content("ImagesResponse")},
            "400": _error("invalid input, naming the field"),
            "408": _error(f"the body did not come whole within {BODY_READ_S:g} s"),
            "413": _error("body over the size limit"),
            "415": _error("a body not sent as Content-Type: application/json, or compressed (Content-Encoding)")
            | {"headers": _NO_CODINGS},
            "429": _error("queue full; retry after the Retry-After header") | {"headers": _RETRY_AFTER},
            "500": _server_error("a worker failed on this request (worker_error), or the engine did (internal_error)"),
            "503": _server_error(
                "no worker can serve (no_worker, worker_lost), or the engine is stopping: shutting_down (refused) or"
                " cancelled (admitted, then cancelled when the drain ended); or too_many_bodies: the request bodies"
                f" being read hold the engine's {BODY_BUDGET_BYTES >> 20} MiB for them, this one refused unread"
            )
            | {"headers": _NO_RETRY | _WORKER_BACK},
            "501": _server_error(
                "a Transfer-Encoding not understood (unsupported_transfer_encoding): chunked is the only one"
            ),
            "504": _server_error("the request's deadline (slo_ms) passed"),
        },
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
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "argus", "version": version},
        **({"servers": [{"url": public_url, "description": "--public-url"}]} if public_url else {}),
        "paths": {
            "/v1/images/generations": {"post": answered(generate)},
            "/v1/images/files/{name}": {"get": answered(image_file, keyed=False)},
            "/health": {"get": answered({"operationId": "health", "responses": any_json}, keyed=False, probe=True)},
            "/ready": {
                "get": answered(
                    {
                        "operationId": "ready",
                        "responses": {
                            **any_json,
                            "503": {"description": "not ready", "content": any_json["200"]["content"]},
                        },
                    },
                    probe=True,
                )
            },
            "/metrics": {"get": answered({"operationId": "metrics", "responses": plain_text})},
            "/plan": {
                "get": answered(
                    {
                        "operationId": "plan",
                        "summary": "The controller's plan in force: workers per level and redirection",
                        "responses": {**any_json, "503": _error("no plan made yet")},
                    }
                )
            },
            "/v1/models": {
                "get": answered(
                    {
                        "operationId": "listModels",
                        "summary": "The one model this engine serves (the images endpoint echoes any model it is"
                        " given)",
                        "responses": {"200": {"description": "ok", "content": _json_content("ModelList")}},
                    }
                )
            },
            "/v1/models/{model}": {
                "get": answered(
                    {
                        "operationId": "retrieveModel",
                        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                        "responses": {
                            "200": {"description": "ok", "content": _json_content("Model")},
                            "404": _error("not the model this engine serves"),
                        },
                    }
                )
            },
            "/openapi.json": {"get": answered({"operationId": "openapi", "responses": any_json})},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
