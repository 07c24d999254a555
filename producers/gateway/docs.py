"""The gateway's `/docs` page: its OpenAPI document rendered as plain HTML, served by the gateway itself.

FastAPI's own pages load Swagger UI's scripts and styles from a public CDN: an operator's browser would
fetch and run third-party code next to a page that handles API keys, and the page is blank where the
CDN is unreachable. This page needs nothing but the gateway: every operation with its summary,
parameters, request body schema and responses, and a link to `/openapi.json` for tools.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "h2{border-top:1px solid #ccc;padding-top:1rem}code,pre{background:#f4f4f4;padding:.1rem .3rem}"
    "pre{padding:.5rem;overflow-x:auto}details{margin:.5rem 0}"
)


def docs_page(openapi: dict[str, Any]) -> str:
    """The whole page for an OpenAPI document."""
    info = openapi.get("info", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(info.get('title', 'API'))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} <small>{escape(str(info.get('version', '')))}</small></h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        "<p>Machine-readable document: <a href='openapi.json'><code>/openapi.json</code></a></p>",
    ]
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            parts.append(_operation(method, path, operation))
    schemas = openapi.get("components", {}).get("schemas", {})
    parts.append("<h2>Schemas</h2>")
    parts += [_block(name, schema) for name, schema in sorted(schemas.items())]
    parts.append("</body></html>")
    return "".join(parts)


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    rows = [f"<h2><code>{escape(method.upper())} {escape(path)}</code></h2>"]
    rows.append(f"<p>{escape(operation.get('summary', ''))}</p>")
    for parameter in operation.get("parameters", []):
        rows.append(
            f"<p>parameter <code>{escape(parameter.get('name', ''))}</code> in {escape(parameter.get('in', ''))}"
            f"{' (required)' if parameter.get('required') else ''}</p>"
        )
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        rows.append(_block("request body", body))
    rows.append("<ul>")
    for status, response in operation.get("responses", {}).items():
        rows.append(f"<li><b>{escape(str(status))}</b> {escape(response.get('description', ''))}</li>")
    rows.append("</ul>")
    return "".join(rows)


def _block(title: str, schema: Any) -> str:
    text = escape(json.dumps(schema, indent=2, ensure_ascii=False))
    return f"<details><summary>{escape(title)}</summary><pre>{text}</pre></details>"
