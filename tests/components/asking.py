"""Tools that ask their caller's client: a form to fill in (elicitation) and an LLM completion
(sampling), from a stateful instance per desk that writes before it asks and after the answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from statefulmcp import ClientCapabilityError, Context, Stateful, ToolCallError, component, tool


class Signup(BaseModel):
    """The form: a default for each field, an enum, a description."""

    name: str = Field(default="Ada", description="Your name")
    plan: Literal["free", "pro"] = "free"
    seats: int = 1


@component(stateful=True, key="desk")
class Desk(Stateful):
    """One instance per desk; `asked` is written before each question, the answer after it."""

    @tool
    async def sign_up(self, desk: str, ctx: Context) -> dict[str, Any]:
        """Asks who is signing up; records the question first and the answer after."""
        self.state["asked"] = self.state.get("asked", 0) + 1
        answer = await ctx.elicit("Who is signing up?", Signup)
        if answer.data is None:
            self.state["last"] = answer.action
            return {"action": answer.action, "asked": self.state["asked"]}
        self.state["last"] = answer.data.name
        return {"action": "accept", **answer.data.model_dump(), "asked": self.state["asked"]}

    @tool
    async def choose(self, desk: str, ctx: Context) -> dict[str, Any]:
        """Asks with a hand-written schema (titled choices); returns the content as sent."""
        answer = await ctx.elicit(
            "Pick colours",
            {
                "type": "object",
                "properties": {
                    "colours": {
                        "type": "array",
                        "items": {
                            "anyOf": [{"const": "r", "title": "Red"}, {"const": "g", "title": "Green"}]
                        },
                    }
                },
            },
        )
        return {"action": answer.action, "content": answer.content}

    @tool
    async def patient(self, desk: str, ctx: Context) -> str:
        """Asks, and when no answer comes, records why and says so."""
        try:
            answer = await ctx.elicit("Still there?", Signup)
        except ToolCallError as exc:
            self.state["gave_up"] = str(exc)
            return "gave up"
        return answer.action

    @tool
    async def ask_or_default(self, desk: str, ctx: Context) -> str:
        """Asks for a name, or goes on with a default when the client cannot be asked."""
        try:
            answer = await ctx.elicit("Name?", Signup)
        except ClientCapabilityError:
            return "nobody to ask"
        return answer.data.name if answer.data is not None else answer.action

    @tool
    async def summarize(self, desk: str, text: str, ctx: Context) -> str:
        """Has the client's LLM summarize `text`."""
        self.state["sampled"] = self.state.get("sampled", 0) + 1
        result = await ctx.sample(f"Summarize: {text}", max_tokens=50, system_prompt="Be brief")
        return getattr(result.content, "text", "")

    @tool
    async def peek(self, desk: str) -> dict[str, Any]:
        """What the desk's state holds now."""
        return dict(self.state)
