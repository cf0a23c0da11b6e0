"""The status API's OpenAPI 3.1 document, kept by hand next to the routes (``GET /openapi.json``).

``tests/test_status_api.py`` checks that every status route of the app is described here with its
parameters, and that the document's references resolve.
"""

from __future__ import annotations

from typing import Any


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


_STR = {"type": "string", "minLength": 1, "maxLength": 256}
_POS = {"type": "integer", "minimum": 1}
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ERRORS = {
    "401": {"description": "no credentials", "content": _ERROR_REF},
    "403": {"description": "a wrong token, or a client API key without the status scope", "content": _ERROR_REF},
    "422": {"description": "bad input: the field and rule", "content": _ERROR_REF},
}


def _ok(schema: str, description: str, *, not_found: str | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    responses: dict[str, Any] = {"200": {"description": description, "content": content}, **_ERRORS}
    if not_found:
        responses["404"] = {
            "description": not_found,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def _where(kind: str, id_name: str, first: str, counter_query: bool) -> dict[str, Any]:
    params = [_param(first, "path", f"the {first} that sent it", _STR), _param(id_name, "path", f"its {id_name}", _STR)]
    if counter_query:
        params.append(_param("counter_id", "query", "the Metrica counter it was sent for", _POS))
    return {
        "get": {
            "summary": f"Where a {kind} is: in the stream, buffered, in a batch, uploaded, final, quarantined, held",
            "operationId": f"where_{kind}",
            "parameters": params,
            "responses": _ok("Whereabouts", "found", not_found=f"no such {kind} is known"),
        }
    }


_WHEREABOUTS = {
    "type": "object",
    "required": ["kind", "place", "state", "times"],
    "properties": {
        "kind": {"enum": ["calls", "conversions", "chats"]},
        "place": {"enum": ["stream", "buffered", "batch", "held", "unknown"]},
        "state": {
            "description": "IN_STREAM, BUFFERED, HELD, UNKNOWN, or the batch's state: SEALED, UPLOADING, UPLOADED, "
            "PROCESSED, LINKAGE_FAILURE, QUARANTINED, REPLAYED, DISCARDED",
            "type": "string",
        },
        "counter_id": {"type": "integer"},
        "batch": {"$ref": "#/components/schemas/Batch"},
        "held": {"type": "object", "properties": {"entry_id": {"type": "string"}, "reason": {"type": "string"}}},
        "times": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "ms since the epoch"},
        "note": {"type": "string"},
    },
}
_BATCH = {
    "type": "object",
    "required": ["batch_id", "counter_id", "kind", "state", "final", "times"],
    "properties": {
        "batch_id": {"type": "string"},
        "counter_id": {"type": "integer"},
        "kind": {"type": "string"},
        "state": {"type": "string"},
        "final": {"type": "boolean"},
        "upload_id": {"type": "string"},
        "status": {"type": "string", "description": "Metrica's status of the upload"},
        "reason": {"type": "string", "description": "why the batch was quarantined"},
        "rows": {"type": "integer"},
        "rejected_lines": {"type": "integer", "description": "rows Metrica refused"},
        "replay_of": {"type": "string"},
        "replayed_as": {"type": "string"},
        "times": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
_FIGURES = {
    "type": "object",
    "required": ["counter_id", "calls_waiting", "calls_held", "calls_uploaded", "batches", "token"],
    "properties": {
        "counter_id": {"type": "integer"},
        "calls_waiting": {"type": "integer", "description": "in the ingest stream (sampled) and open buffers"},
        "calls_accepted": {
            "type": "integer",
            "description": "waiting plus in batches (open ones, the newest final ones)",
        },
        "calls_held": {"type": "integer"},
        "held_reasons": {"type": "object", "additionalProperties": {"type": "integer"}},
        "calls_uploaded": {"type": "integer"},
        "rows_refused": {"type": "integer"},
        "batches": {"type": "object", "additionalProperties": {"type": "integer"}},
        "open_uploads": {"type": "integer"},
        "failure_rate": {"type": "number", "description": "LINKAGE_FAILURE among final batches"},
        "oldest_waiting_ms": {"type": "integer"},
        "token": {"type": "object", "description": "state: ok, near_expiry, expired, refused, missing"},
        "readiness": {"type": ["object", "null"]},
    },
}
_UPLOADS = {
    "type": "object",
    "required": ["counter_id", "page", "per_page", "total", "uploads"],
    "properties": {
        "counter_id": {"type": "integer"},
        "page": {"type": "integer"},
        "per_page": {"type": "integer"},
        "total": {"type": "integer"},
        "uploads": {"type": "array", "items": {"$ref": "#/components/schemas/Batch"}},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": {"type": "string"}, "rule": {"type": "string"}}},
        },
    },
}


def document() -> dict[str, Any]:
    counter = _param("counter", "path", "a Metrica counter id", _POS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "calltrack status API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/calls/{provider}/{call_id}": _where("call", "call_id", "provider", False),
            "/v1/conversions/{source}/{conversion_id}": _where("conversion", "conversion_id", "source", True),
            "/v1/chats/{source}/{chat_id}": _where("chat", "chat_id", "source", True),
            "/v1/counters/{counter}": {
                "get": {
                    "summary": "A counter's figures",
                    "operationId": "counter",
                    "parameters": [counter],
                    "responses": _ok("Figures", "the figures", not_found="the counter is not known"),
                }
            },
            "/v1/counters/{counter}/uploads": {
                "get": {
                    "summary": "A counter's batches and uploads, newest first",
                    "operationId": "counter_uploads",
                    "parameters": [
                        counter,
                        _param("page", "query", "page number", _POS, False),
                        _param("per_page", "query", "items per page", {**_POS, "maximum": 500}, False),
                        _param("kind", "query", "one kind", {"enum": ["calls", "conversions", "chats"]}, False),
                    ],
                    "responses": _ok("Uploads", "one page", not_found="another client's counter (client API keys)"),
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": {"description": "it"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "CALLTRACK_STATUS_API_TOKEN (the operator: every counter) or a client API key "
                    "ctk_... with the status scope (its client's counters only: any other counter, call, "
                    "conversion or chat answers 404, as an unknown one)",
                }
            },
            "schemas": {
                "Whereabouts": _WHEREABOUTS,
                "Batch": _BATCH,
                "Figures": _FIGURES,
                "Uploads": _UPLOADS,
                "Error": _ERROR,
            },
        },
    }
