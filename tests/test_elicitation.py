"""A tool asks its caller's client for a form (elicitation) or an LLM completion (sampling), in both
protocol eras and over stdio. While the client answers, a stateful instance's turn is released:
what the call wrote so far is committed and other calls run; the answer resumes the call."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import COMPONENTS, error, http_session, running, stdio_session, value
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
    TextContent,
)

from statefulmcp import ClientCapabilityError, Host

pytestmark = pytest.mark.anyio

ASKING = COMPONENTS / "asking.py"


class Form:
    """A client's elicitation handler: answers with `action` (and `content` on accept), and keeps
    what it was asked."""

    def __init__(self, action: str = "accept", content: dict[str, str | int] | None = None) -> None:
        self.action = action
        self.content: dict[str, str | int] = (
            content if content is not None else {"name": "Grace", "plan": "pro", "seats": 3}
        )
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if self.action != "accept":
            return ElicitResult(action=self.action)  # type: ignore[arg-type]
        return ElicitResult(action="accept", content=dict(self.content.items()))


async def llm(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
    """A client's sampling handler: echoes the prompt and the system prompt it was sent."""
    prompt = params.messages[0].content
    said = getattr(prompt, "text", "?")
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=f"[{params.system_prompt}] {said} ({params.max_tokens})"),
        model="test-model",
    )


async def call_answering(
    session: ClientSession,
    name: str,
    arguments: dict[str, Any],
    answer: Callable[[Any, Any], Awaitable[Any]],
) -> CallToolResult:
    """A 2026-07-28 call: answer each `InputRequiredResult` with `answer` and retry, until a result."""
    result = await session.call_tool(name, arguments, allow_input_required=True)
    while isinstance(result, InputRequiredResult):
        assert result.input_requests
        responses = {
            key: await answer(None, request.params) for key, request in result.input_requests.items()
        }
        result = await session.call_tool(
            name,
            arguments,
            input_responses=responses,
            request_state=result.request_state,
            allow_input_required=True,
        )
    return result


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
async def test_a_handshake_era_client_answers_a_form_and_the_call_resumes_with_it(
    tmp_path: Path, action: str
) -> None:
    form = Form(action)
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, elicitation_callback=form) as session:
            answer = value(await session.call_tool("desk_sign_up", {"desk": "d1"}))
            state = value(await session.call_tool("desk_peek", {"desk": "d1"}))
    if action == "accept":
        assert answer == {"action": "accept", "name": "Grace", "plan": "pro", "seats": 3, "asked": 1}
        assert state == {"asked": 1, "last": "Grace"}
    else:
        assert answer == {"action": action, "asked": 1}
        assert state == {"asked": 1, "last": action}


async def test_the_form_carries_its_defaults_enums_and_descriptions(tmp_path: Path) -> None:
    form = Form()
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, elicitation_callback=form) as session:
            value(await session.call_tool("desk_sign_up", {"desk": "d1"}))
            chosen = value(await session.call_tool("desk_choose", {"desk": "d1"}))
    signup, colours = (params.requested_schema for params in form.asked)  # type: ignore[union-attr]
    assert form.asked[0].message == "Who is signing up?"
    assert signup["properties"]["name"] == {
        "default": "Ada",
        "description": "Your name",
        "title": "Name",
        "type": "string",
    }
    assert signup["properties"]["plan"]["enum"] == ["free", "pro"]
    assert signup["properties"]["plan"]["default"] == "free"
    assert signup["properties"]["seats"]["default"] == 1
    assert colours["properties"]["colours"]["items"]["anyOf"][0] == {"const": "r", "title": "Red"}
    # A dict schema's content comes back as the client sent it.
    assert chosen == {"action": "accept", "content": form.content}


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
async def test_a_modern_client_answers_by_retrying_the_call_and_the_parked_call_resumes(
    tmp_path: Path, action: str
) -> None:
    form = Form(action)
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, "modern", elicitation_callback=form) as session:
            answer = value(await call_answering(session, "desk_sign_up", {"desk": "d1"}, form))
            state = value(await session.call_tool("desk_peek", {"desk": "d1"}))
    # The tool ran once: its first half was not run again by the retry.
    expected = {"action": "accept", "name": "Grace", "plan": "pro", "seats": 3} if action == "accept" else {}
    assert answer == {"action": action, **expected, "asked": 1}
    assert state["asked"] == 1
    assert form.asked[0].message == "Who is signing up?"
    assert form.asked[0].requested_schema["properties"]["plan"]["enum"] == ["free", "pro"]  # type: ignore[union-attr]


async def test_the_instance_serves_other_calls_while_the_user_takes_five_seconds(tmp_path: Path) -> None:
    events: list[str] = []
    seen: dict[str, Any] = {}
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url) as other:

            async def slow_user(context: Any, params: ElicitRequestParams) -> ElicitResult:
                # The user takes 5 s to answer; meanwhile others use the same instance.
                with anyio.fail_after(60):
                    seen["state"] = value(await other.call_tool("desk_peek", {"desk": "d1"}))
                    seen["choice"] = value(await other.call_tool("desk_ask_or_default", {"desk": "d1"}))
                events.append("other calls served")
                await anyio.sleep(5)
                events.append("answered")
                return ElicitResult(action="accept", content={"name": "Lin", "plan": "free", "seats": 2})

            async with http_session(server.url, elicitation_callback=slow_user) as asker:
                answer = value(await asker.call_tool("desk_sign_up", {"desk": "d1"}))
            state = value(await other.call_tool("desk_peek", {"desk": "d1"}))
    assert events == ["other calls served", "answered"]
    # The first half's write was committed before the question left, and visible to the others.
    assert seen["state"] == {"asked": 1}
    # The other session declared no elicitation: its tool went on without asking.
    assert seen["choice"] == "nobody to ask"
    assert answer == {"action": "accept", "name": "Lin", "plan": "free", "seats": 2, "asked": 1}
    assert state == {"asked": 1, "last": "Lin"}


async def test_an_elicitation_over_stdio(tmp_path: Path) -> None:
    form = Form()
    async with stdio_session(ASKING, cwd=tmp_path, elicitation_callback=form) as session:
        answer = value(await session.call_tool("desk_sign_up", {"desk": "d1"}))
    assert answer["name"] == "Grace"
    assert len(form.asked) == 1


async def test_a_tool_samples_the_clients_llm_in_both_eras(tmp_path: Path) -> None:
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, sampling_callback=llm) as legacy:
            old = value(await legacy.call_tool("desk_summarize", {"desk": "d1", "text": "a long story"}))
        async with http_session(server.url, "modern", sampling_callback=llm) as modern:
            new = value(
                await call_answering(modern, "desk_summarize", {"desk": "d2", "text": "another"}, llm)
            )
            state = value(await modern.call_tool("desk_peek", {"desk": "d2"}))
    assert old == "[Be brief] Summarize: a long story (50)"
    assert new == "[Be brief] Summarize: another (50)"
    assert state == {"sampled": 1}


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_a_client_without_the_capability_gets_the_protocols_error_and_the_instance_is_unharmed(
    tmp_path: Path, mode: str
) -> None:
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, mode) as session:
            with pytest.raises(MCPError) as refused:
                await session.call_tool("desk_sign_up", {"desk": "d1"})
            with pytest.raises(MCPError) as no_llm:
                await session.call_tool("desk_summarize", {"desk": "d1", "text": "x"})
            # The refused calls wrote nothing (rolled back before anything was released or sent).
            state = value(await session.call_tool("desk_peek", {"desk": "d1"}))
            fallback = value(await session.call_tool("desk_ask_or_default", {"desk": "d1"}))
    assert refused.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert "did not declare the form elicitation capability" in refused.value.error.message
    assert refused.value.error.data == {"requiredCapabilities": {"elicitation": {"form": {}}}}
    assert no_llm.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert "sampling" in no_llm.value.error.message
    assert state == {}
    assert fallback == "nobody to ask"


async def test_an_in_process_call_has_nobody_to_ask() -> None:
    async with Host() as host:
        await host.load(ASKING)
        with pytest.raises(ClientCapabilityError, match="in-process"):
            await host.call("desk_sign_up", {"desk": "d1"})
        assert await host.call("desk_ask_or_default", {"desk": "d1"}) == "nobody to ask"
        assert await host.call("desk_peek", {"desk": "d1"}) == {}


async def test_a_question_never_answered_expires_and_its_state_is_refused(tmp_path: Path) -> None:
    with running(ASKING, "--answer-timeout", "1", tmp=tmp_path) as server:
        async with http_session(server.url, "modern", elicitation_callback=Form()) as session:
            first = await session.call_tool("desk_patient", {"desk": "d1"}, allow_input_required=True)
            assert isinstance(first, InputRequiredResult)
            # Nobody answers. The tool hears so once the answer timeout passes, and goes on.
            with anyio.fail_after(60):
                while "gave_up" not in (state := value(await session.call_tool("desk_peek", {"desk": "d1"}))):
                    await anyio.sleep(0.1)
            with pytest.raises(MCPError) as stale:
                await session.call_tool(
                    "desk_patient",
                    {"desk": "d1"},
                    input_responses={"statefulmcp": ElicitResult(action="cancel")},
                    request_state=first.request_state,
                    allow_input_required=True,
                )
    assert "did not answer within 1 s" in state["gave_up"]
    assert stale.value.error.code == INVALID_PARAMS
    assert "Call the tool again" in stale.value.error.message


async def test_a_retry_with_a_forged_state_is_refused(tmp_path: Path) -> None:
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, "modern", elicitation_callback=Form()) as session:
            with pytest.raises(MCPError) as forged:
                await session.call_tool(
                    "desk_sign_up",
                    {"desk": "d1"},
                    input_responses={"statefulmcp": ElicitResult(action="cancel")},
                    request_state="made-up",
                    allow_input_required=True,
                )
            assert value(await session.call_tool("desk_peek", {"desk": "d1"})) == {}
    assert forged.value.error.code == INVALID_PARAMS


async def test_unloading_the_component_fails_an_open_question_at_once(tmp_path: Path) -> None:
    answered = anyio.Event()
    with running(ASKING, "--allow-load", tmp_path, tmp=tmp_path) as server:
        async with http_session(server.url) as admin:

            async def unloads(context: Any, params: ElicitRequestParams) -> ElicitResult:
                value(await admin.call_tool("unload_component", {"name": "desk"}))
                with anyio.fail_after(60):
                    await answered.wait()  # the user never gets to answer
                return ElicitResult(action="decline")

            async with http_session(server.url, elicitation_callback=unloads) as session:
                result = await session.call_tool("desk_sign_up", {"desk": "d1"})
                answered.set()
    assert "was unloaded while this call waited for its client" in error(result)


async def test_a_drain_fails_an_open_question_at_once(tmp_path: Path) -> None:
    answered = anyio.Event()
    with running(ASKING, "--drain-timeout", "30", tmp=tmp_path) as server:

        async def stops(context: Any, params: ElicitRequestParams) -> ElicitResult:
            server.proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(60):
                await answered.wait()
            return ElicitResult(action="decline")

        async with http_session(server.url, elicitation_callback=stops) as session:
            result = await session.call_tool("desk_sign_up", {"desk": "d1"})
            answered.set()
        assert server.proc.wait(60) == 0
    assert "the server is shutting down" in error(result)


async def test_questions_past_the_bound_are_refused_before_anything_is_committed(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    with running(ASKING, "--max-questions", "1", tmp=tmp_path) as server:
        async with http_session(server.url, elicitation_callback=Form()) as other:

            async def first(context: Any, params: ElicitRequestParams) -> ElicitResult:
                with anyio.fail_after(60):
                    seen["second"] = await other.call_tool("desk_sign_up", {"desk": "d2"})
                    seen["d2"] = value(await other.call_tool("desk_peek", {"desk": "d2"}))
                return ElicitResult(action="decline")

            async with http_session(server.url, elicitation_callback=first) as session:
                assert value(await session.call_tool("desk_sign_up", {"desk": "d1"}))["action"] == "decline"
            # The bound is for questions open at once: with the first one answered, the next is asked.
            assert value(await other.call_tool("desk_sign_up", {"desk": "d2"}))["action"] == "accept"
    assert "1 questions to clients are open already (--max-questions)" in error(seen["second"])
    assert seen["d2"] == {}


async def test_a_modern_call_parked_for_five_seconds_leaves_its_instance_to_others(tmp_path: Path) -> None:
    with running(ASKING, tmp=tmp_path) as server:
        async with http_session(server.url, "modern", elicitation_callback=Form()) as session:
            first = await session.call_tool("desk_sign_up", {"desk": "d1"}, allow_input_required=True)
            assert isinstance(first, InputRequiredResult)
            # Parked: the first half is committed and the instance serves other calls.
            during = value(await session.call_tool("desk_peek", {"desk": "d1"}))
            await anyio.sleep(5)  # the user takes 5 s to fill in the form
            result = await session.call_tool(
                "desk_sign_up",
                {"desk": "d1"},
                input_responses={"statefulmcp": ElicitResult(action="accept", content={"name": "Kay"})},
                request_state=first.request_state,
                allow_input_required=True,
            )
            after = value(await session.call_tool("desk_peek", {"desk": "d1"}))
    assert during == {"asked": 1}
    assert isinstance(result, CallToolResult)
    assert value(result) == {"action": "accept", "name": "Kay", "plan": "free", "seats": 1, "asked": 1}
    assert after == {"asked": 1, "last": "Kay"}
