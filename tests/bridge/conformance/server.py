"""A LEGACY stdio MCP server (Python SDK 1.x, initialize-based) that implements the fixture tools,
resources and prompts of the official conformance suite (npm @modelcontextprotocol/conformance),
so the suite can be run against `mcpctl bridge` wrapping it (scripts/bridge-tests,
test_conformance.py).

It is what a server author writes with the 1.x SDK: no 2026-07-28 code. What the suite's
reference server answers with a multi-round-trip `input_required` result, this server asks the
client for with a server->client request during the call (elicitation/create,
sampling/createMessage, roots/list), as a legacy server does; list changes are `list_changed`
notifications. Whatever the bridge makes of that is the figure.

Run: python server.py   (stdio; logs to stderr)
"""

from __future__ import annotations

import base64
import json
import sys

import anyio
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import McpError

# A 1x1 red PNG and a minimal WAV, as the suite's scenarios describe.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

EMPTY = {"type": "object", "properties": {}}

# SEP-1613 / SEP-2106: a raw JSON Schema 2020-12 input schema the server must list unchanged.
SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def tool(name: str, description: str, schema: dict | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, inputSchema=schema or EMPTY)


def string_args(*names: str) -> dict:
    return {"type": "object", "properties": {n: {"type": "string"} for n in names}, "required": list(names)}


TOOLS = [
    tool("test_simple_text", "Tests simple text content response"),
    tool("test_image_content", "Tests image content response"),
    tool("test_audio_content", "Tests audio content response"),
    tool("test_embedded_resource", "Tests embedded resource content response"),
    tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)"),
    tool("test_tool_with_logging", "Tests tool that emits log messages during execution"),
    tool("test_tool_with_progress", "Tests tool that reports progress notifications"),
    tool("test_error_handling", "Tests error response handling"),
    tool("test_sampling", "Tests server-initiated sampling (LLM completion request)", string_args("prompt")),
    tool("test_elicitation", "Tests server-initiated elicitation (user input request)", string_args("message")),
    tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034"),
    tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330"),
    tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features (SEP-1613)", SCHEMA_2020_12),
    # The 2026-07-28 scenarios' tools, written the legacy way (server->client requests).
    tool("test_missing_capability", "Needs the client's sampling capability"),
    tool("test_input_required_result_elicitation", "Asks the client for a name (elicitation)"),
    tool("test_input_required_result_sampling", "Asks the client's model a question (sampling)"),
    tool("test_input_required_result_list_roots", "Asks the client for its roots"),
    tool("test_input_required_result_request_state", "Asks the client to confirm (elicitation)"),
    tool("test_input_required_result_multiple_inputs", "Elicitation, sampling and roots in one call"),
    tool("test_input_required_result_multi_round", "Two elicitations in a row"),
    tool("test_input_required_result_tampered_state", "Asks the client to confirm (elicitation)"),
    tool("test_input_required_result_capabilities", "Uses whichever of elicitation/sampling the client has"),
    tool("test_streaming_elicitation", "Reports progress, then answers"),
    tool("test_logging_tool", "Logs one message, then answers"),
    tool("test_trigger_tool_change", "Sends notifications/tools/list_changed"),
    tool("test_trigger_prompt_change", "Sends notifications/prompts/list_changed"),
]

ELICIT_DEFAULTS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

ELICIT_ENUMS = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "description": "Select one option", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}

RESOURCES = [
    types.Resource(uri="test://static-text", name="static-text", title="Static Text Resource",
                   description="A static text resource for testing", mimeType="text/plain"),
    types.Resource(uri="test://static-binary", name="static-binary", title="Static Binary Resource",
                   description="A static binary resource (image) for testing", mimeType="image/png"),
    types.Resource(uri="test://watched-resource", name="watched-resource", title="Watched Resource",
                   description="A resource clients may subscribe to", mimeType="text/plain"),
]

TEMPLATES = [
    types.ResourceTemplate(uriTemplate="test://template/{id}/data", name="template", title="Resource Template",
                           description="A resource template with parameter substitution", mimeType="application/json"),
]

PROMPTS = [
    types.Prompt(name="test_simple_prompt", title="Simple Test Prompt", description="A simple prompt without arguments"),
    types.Prompt(name="test_prompt_with_arguments", title="Prompt With Arguments", description="A prompt with required arguments",
                 arguments=[types.PromptArgument(name="arg1", description="First test argument", required=True),
                            types.PromptArgument(name="arg2", description="Second test argument", required=True)]),
    types.Prompt(name="test_prompt_with_embedded_resource", title="Prompt With Embedded Resource",
                 description="A prompt that includes an embedded resource",
                 arguments=[types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)]),
    types.Prompt(name="test_prompt_with_image", title="Prompt With Image", description="A prompt that includes image content"),
    types.Prompt(name="test_input_required_result_prompt", title="Prompt needing context",
                 description="Asks the client for context (elicitation) before answering"),
]

server: Server = Server("mcp-conformance-legacy-fixture", version="1.0.0",
                        instructions="Legacy (initialize-based) conformance fixture behind mcpctl bridge")
subscriptions: set[str] = set()


def ctx():
    return server.request_context


def text(t: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=t)]


async def elicit_text(message: str, field: str) -> str:
    r = await ctx().session.elicit(message, {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]},
                                   related_request_id=ctx().request_id)
    return str((r.content or {}).get(field, "unknown"))


async def sample(prompt: str, max_tokens: int) -> str:
    r = await ctx().session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=max_tokens, related_request_id=ctx().request_id)
    c = r.content
    return getattr(c, "text", None) or json.dumps(r.model_dump(mode="json", exclude_none=True))


async def list_roots() -> list[str]:
    r = await ctx().session.list_roots()
    return [str(x.uri) for x in r.roots]


async def log(level: types.LoggingLevel, data: str) -> None:
    await ctx().session.send_log_message(level, data, logger="conformance-test-server", related_request_id=ctx().request_id)


@server.list_tools()
async def list_tools() -> list[types.Tool]:
    return TOOLS


@server.call_tool(validate_input=False)
async def call_tool(name: str, args: dict):
    c = ctx()
    if name == "test_simple_text":
        return text("This is a simple text response for testing.")
    if name == "test_image_content":
        return [types.ImageContent(type="image", data=PNG, mimeType="image/png")]
    if name == "test_audio_content":
        return [types.AudioContent(type="audio", data=WAV, mimeType="audio/wav")]
    if name == "test_embedded_resource":
        return [types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="test://embedded-resource", mimeType="text/plain", text="This is an embedded resource content."))]
    if name == "test_multiple_content_types":
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mimeType="image/png"),
            types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                uri="test://mixed-content-resource", mimeType="application/json",
                text=json.dumps({"test": "data", "value": 123}))),
        ]
    if name == "test_tool_with_logging":
        for i, msg in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
            if i:
                await anyio.sleep(0.05)
            await log("info", msg)
        return text("Tool with logging executed successfully")
    if name in ("test_tool_with_progress", "test_streaming_elicitation"):
        token = c.meta.progressToken if c.meta else None
        steps = (0, 50, 100) if name == "test_tool_with_progress" else (50,)
        for i, p in enumerate(steps):
            if i:
                await anyio.sleep(0.05)
            if token is not None:
                await c.session.send_progress_notification(token, p, 100, f"Completed step {p} of 100",
                                                           related_request_id=str(c.request_id))
        return text(str(token) if name == "test_tool_with_progress" else "Streaming complete")
    if name == "test_error_handling":
        raise RuntimeError("This tool intentionally returns an error for testing")
    if name == "test_sampling":
        return text(f"LLM response: {await sample(args.get('prompt', ''), 100)}")
    if name == "test_elicitation":
        r = await c.session.elicit(args.get("message", ""), {
            "type": "object", "properties": {"response": {"type": "string", "description": "User's response"}},
            "required": ["response"]}, related_request_id=c.request_id)
        return text(f"User response: action={r.action}, content={json.dumps(r.content or {})}")
    if name in ("test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"):
        schema, message = ((ELICIT_DEFAULTS, "Please review and update the form fields with defaults")
                           if name.endswith("defaults") else (ELICIT_ENUMS, "Please select options from the enum fields"))
        r = await c.session.elicit(message, schema, related_request_id=c.request_id)
        return text(f"Elicitation completed: action={r.action}, content={json.dumps(r.content or {})}")
    if name == "json_schema_2020_12_tool":
        return text(f"JSON Schema 2020-12 tool called with: {json.dumps(args)}")
    if name == "test_missing_capability":
        return text(f"sampled: {await sample('Sample request', 50)}")
    if name == "test_input_required_result_elicitation":
        return text(f"Hello, {await elicit_text('What is your name?', 'name')}!")
    if name == "test_input_required_result_sampling":
        return text(f"Sampling response: {await sample('What is the capital of France?', 100)}")
    if name == "test_input_required_result_list_roots":
        return text(f"Roots: {', '.join(await list_roots())}")
    if name in ("test_input_required_result_request_state", "test_input_required_result_tampered_state"):
        r = await c.session.elicit("Please confirm", {"type": "object", "properties": {"ok": {"type": "boolean"}},
                                                      "required": ["ok"]}, related_request_id=c.request_id)
        return text(f"state-ok: confirmed={json.dumps((r.content or {}).get('ok'))}")
    if name == "test_input_required_result_multiple_inputs":
        who = await elicit_text("What is your name?", "name")
        greeting = await sample("Generate a greeting", 50)
        roots = await list_roots()
        return text(f"multiple-inputs-ok: name={who}, greeting={greeting}, roots={len(roots)}")
    if name == "test_input_required_result_multi_round":
        who = await elicit_text("Step 1: What is your name?", "name")
        color = await elicit_text("Step 2: What is your favorite color?", "color")
        return text(f"Multi-round complete for {who} who likes {color}")
    if name == "test_input_required_result_capabilities":
        caps = c.session.client_params.capabilities if c.session.client_params else None
        got = []
        if caps and caps.elicitation:
            got.append("elicit_input=" + await elicit_text("Elicitation input", "value"))
        if caps and caps.sampling:
            got.append("sample_input=" + await sample("Sample request", 50))
        return text(f"capabilities-ok: received {','.join(got)}" if got else "No supported capabilities declared")
    if name == "test_logging_tool":
        await log("info", "Diagnostic trace logging activated")
        return text("Logging evaluated")
    if name == "test_trigger_tool_change":
        await c.session.send_tool_list_changed()
        return text("Mutation triggered")
    if name == "test_trigger_prompt_change":
        await c.session.send_prompt_list_changed()
        return text("Mutation triggered")
    raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}"))


@server.list_resources()
async def list_resources() -> list[types.Resource]:
    return RESOURCES


@server.list_resource_templates()
async def list_resource_templates() -> list[types.ResourceTemplate]:
    return TEMPLATES


@server.read_resource()
async def read_resource(uri) -> list[ReadResourceContents]:
    u = str(uri)
    if u == "test://static-text":
        return [ReadResourceContents("This is the content of the static text resource.", "text/plain")]
    if u == "test://static-binary":
        return [ReadResourceContents(base64.b64decode(PNG), "image/png")]
    if u == "test://watched-resource":
        return [ReadResourceContents("Watched resource content", "text/plain")]
    prefix, suffix = "test://template/", "/data"
    if u.startswith(prefix) and u.endswith(suffix) and len(u) > len(prefix) + len(suffix):
        rid = u[len(prefix):-len(suffix)]
        return [ReadResourceContents(json.dumps({"id": rid, "templateTest": True, "data": f"Data for ID: {rid}"}),
                                     "application/json")]
    # The legacy code for an unknown resource (2026-07-28 uses -32602 instead).
    raise McpError(types.ErrorData(code=-32002, message="Resource not found", data={"uri": u}))


@server.subscribe_resource()
async def subscribe(uri) -> None:
    subscriptions.add(str(uri))


@server.unsubscribe_resource()
async def unsubscribe(uri) -> None:
    subscriptions.discard(str(uri))


@server.list_prompts()
async def list_prompts() -> list[types.Prompt]:
    return PROMPTS


def user(content) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


@server.get_prompt()
async def get_prompt(name: str, args: dict | None) -> types.GetPromptResult:
    a = args or {}
    if name == "test_simple_prompt":
        return types.GetPromptResult(messages=[user(types.TextContent(type="text", text="This is a simple prompt for testing."))])
    if name == "test_prompt_with_arguments":
        t = f"Prompt with arguments: arg1='{a.get('arg1', '')}', arg2='{a.get('arg2', '')}'"
        return types.GetPromptResult(messages=[user(types.TextContent(type="text", text=t))])
    if name == "test_prompt_with_embedded_resource":
        res = types.TextResourceContents(uri=a.get("resourceUri", "test://example-resource"), mimeType="text/plain",
                                         text="Embedded resource content for testing.")
        return types.GetPromptResult(messages=[
            user(types.EmbeddedResource(type="resource", resource=res)),
            user(types.TextContent(type="text", text="Please process the embedded resource above.")),
        ])
    if name == "test_prompt_with_image":
        return types.GetPromptResult(messages=[
            user(types.ImageContent(type="image", data=PNG, mimeType="image/png")),
            user(types.TextContent(type="text", text="Please analyze the image above.")),
        ])
    if name == "test_input_required_result_prompt":
        context = await elicit_text("What context should the prompt use?", "context")
        return types.GetPromptResult(messages=[user(types.TextContent(type="text", text=f"Context: {context}"))])
    raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"Unknown prompt: {name}"))


@server.set_logging_level()
async def set_level(level: types.LoggingLevel) -> None:
    await log("info", f"Log level set to: {level}")


@server.completion()
async def complete(ref, argument, context) -> types.Completion:
    return types.Completion(values=[], total=0, hasMore=False)


async def main() -> None:
    opts = server.create_initialization_options(
        NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True))
    opts.capabilities.resources.subscribe = True
    async with stdio_server() as (read, write):
        await server.run(read, write, opts)


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
