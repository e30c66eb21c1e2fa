"""The component the MCP conformance suite (`make conformance`) is run against.

Written with statefulmcp's public API only, as a user would write it: each tool or prompt
is the one a scenario of `@modelcontextprotocol/conformance` asks for by name
(`test_<name>`, so the component is called `test`), each resource the one it reads by URI.
Content blocks are the SDK's types.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Literal

from mcp.types import (
    AudioContent,
    EmbeddedResource,
    ImageContent,
    PromptMessage,
    TextContent,
    TextResourceContents,
)
from pydantic import BaseModel

from statefulmcp import Context, component, prompt, resource, tool

# A 1x1 red PNG and a tiny WAV header, base64: the smallest payloads the scenarios accept.
RED_PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SILENCE = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="


def _resource(
    uri: str = "test://embedded-resource", text: str = "This is an embedded resource content."
) -> EmbeddedResource:
    return EmbeddedResource(
        type="resource", resource=TextResourceContents(uri=uri, mime_type="text/plain", text=text)
    )


class Defaults(BaseModel):
    """A default for each primitive type (SEP-1034)."""

    name: str = "John Doe"
    age: int = 30
    score: float = 95.5
    status: Literal["active", "inactive", "pending"] = "active"
    verified: bool = True


ENUMS = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}
"""Every enum shape of SEP-1330: untitled and titled single-select, the legacy `enumNames`, and
untitled and titled multi-select."""


@component(name="test")
class Everything:
    """Every tool, prompt and resource the conformance suite's server scenarios ask for."""

    @tool
    def simple_text(self) -> str:
        """Returns a simple text response."""
        return "This is a simple text response for testing."

    @tool
    def image_content(self) -> ImageContent:
        """Returns a 1x1 red PNG."""
        return ImageContent(type="image", data=RED_PIXEL, mime_type="image/png")

    @tool
    def audio_content(self) -> AudioContent:
        """Returns a silent WAV."""
        return AudioContent(type="audio", data=SILENCE, mime_type="audio/wav")

    @tool
    def embedded_resource(self) -> EmbeddedResource:
        """Returns an embedded text resource."""
        return _resource()

    @tool
    def multiple_content_types(self) -> list[TextContent | ImageContent | EmbeddedResource]:
        """Returns text, an image and a resource in one result."""
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=RED_PIXEL, mime_type="image/png"),
            _resource(),
        ]

    @tool
    def error_handling(self) -> str:
        """Always fails, so the client sees an error result."""
        raise RuntimeError("This tool intentionally returns an error for testing")

    @tool
    async def tool_with_logging(self, ctx: Context) -> str:
        """Sends three log messages while it runs."""
        await ctx.log("info", "Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.log("info", "Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.log("info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @tool
    async def tool_with_progress(self, ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100 while it runs."""
        for done in (0, 50, 100):
            await ctx.report_progress(done, 100)
            if done < 100:
                await asyncio.sleep(0.05)
        return "Tool with progress executed successfully"

    @tool
    async def sampling(self, prompt: str, ctx: Context) -> str:
        """Asks the client's LLM to answer `prompt`."""
        result = await ctx.sample(prompt, max_tokens=100)
        return f"LLM response: {getattr(result.content, 'text', '')}"

    @tool
    async def elicitation(self, message: str, ctx: Context) -> str:
        """Asks the user for a username and an email address."""
        answer = await ctx.elicit(
            message,
            {
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"},
                },
                "required": ["username", "email"],
            },
        )
        return f"User response: action={answer.action}, content={json.dumps(answer.content)}"

    @tool
    async def elicitation_sep1034_defaults(self, ctx: Context) -> str:
        """Asks with a default for every primitive type (SEP-1034), from a pydantic model."""
        answer = await ctx.elicit("Please review your details", Defaults)
        return f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}"

    @tool
    async def elicitation_sep1330_enums(self, ctx: Context) -> str:
        """Asks with the five enum shapes of SEP-1330."""
        answer = await ctx.elicit("Please choose", ENUMS)
        return f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}"

    @prompt
    def simple_prompt(self) -> str:
        """A prompt with no arguments."""
        return "This is a simple prompt for testing."

    @prompt(complete={"arg1": lambda typed: [w for w in ("paris", "park", "party") if w.startswith(typed)]})
    def prompt_with_arguments(self, arg1: str, arg2: str) -> str:
        """A prompt that puts its two arguments in its message."""
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @prompt
    def prompt_with_embedded_resource(self, resourceUri: str) -> list[PromptMessage]:
        """A prompt that embeds the resource it is given."""
        return [
            PromptMessage(
                role="user", content=_resource(resourceUri, "Embedded resource content for testing.")
            ),
            PromptMessage(
                role="user",
                content=TextContent(type="text", text="Please process the embedded resource above."),
            ),
        ]

    @prompt
    def prompt_with_image(self) -> list[PromptMessage | str]:
        """A prompt with an image, then text."""
        return [
            PromptMessage(
                role="user", content=ImageContent(type="image", data=RED_PIXEL, mime_type="image/png")
            ),
            "Please analyze the image above.",
        ]

    @resource("test://static-text", name="static_text")
    def static_text(self) -> str:
        """A static text resource."""
        return "This is the content of the static text resource."

    @resource("test://static-binary", name="static_binary", mime_type="image/png")
    def static_binary(self) -> bytes:
        """A static binary resource: a 1x1 red PNG."""
        return base64.b64decode(RED_PIXEL)

    @resource("test://template/{id}/data", name="template_data", mime_type="application/json")
    def template_data(self, id: str) -> str:
        """Data for the id in the URI, as JSON."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@component(name="json")
class JsonSchema:
    """The scenario for JSON Schema 2020-12 keywords (SEP-1613): a hand-written input schema."""

    @tool(
        name="schema_2020_12_tool",
        input_schema={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
    )
    def schema_2020_12_tool(self, name: str = "", address: dict[str, str] | None = None) -> str:
        """Tool with JSON Schema 2020-12 features."""
        return f"name={name} address={address}"
