"""`@prompt` methods and functions are served as MCP prompts named `<component>_<name>`: listed
with their arguments, run like a tool (a turn of the instance, for a stateful component), and
announced with `notifications/prompts/list_changed` when components come and go."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import COMPONENTS, Notified, http_session, running, stdio_session, value
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    PromptArgument,
    PromptListChangedNotification,
    PromptReference,
)

from statefulmcp import ComponentError, Host, prompt

pytestmark = pytest.mark.anyio

PROMPTING = COMPONENTS / "prompting.py"


async def test_prompts_are_listed_with_their_arguments_and_descriptions(tmp_path: Path) -> None:
    with running(PROMPTING, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            prompts = {p.name: p for p in (await session.list_prompts()).prompts}
    assert set(prompts) == {"desk_review", "desk_broken", "desk_wrong", "prompting_greet"}
    review = prompts["desk_review"]
    assert review.description == "Asks for a review of the notes kept so far."
    assert review.arguments == [
        PromptArgument(name="tone", description="how to sound", required=True),
        PromptArgument(name="limit", required=False),
    ]
    assert prompts["prompting_greet"].arguments == [
        PromptArgument(name="name", required=True),
        PromptArgument(name="style", required=False),
    ]


async def test_a_stateful_prompt_runs_on_its_instance_and_returns_messages(tmp_path: Path) -> None:
    with running(PROMPTING, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            for text in ("one", "two", "three"):
                await session.call_tool("desk_note", {"text": text})
            got = await session.get_prompt("desk_review", {"tone": "kindly", "limit": "2"})
            greeting = await session.get_prompt("prompting_greet", {"name": "Ada"})
    assert got.description == "Asks for a review of the notes kept so far."
    assert [(m.role, m.content.text) for m in got.messages] == [  # type: ignore[union-attr]
        ("assistant", "I keep 3 notes."),
        ("user", "Review them kindly: one; two"),
    ]
    assert [(m.role, m.content.text) for m in greeting.messages] == [("user", "Say hello to Ada.")]  # type: ignore[union-attr]


async def test_bad_prompt_requests_get_errors_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with running(PROMPTING, tmp=tmp_path) as server:
        async with http_session(server.url, "modern") as session:
            with pytest.raises(MCPError, match="unknown prompt 'desk_nothing'") as unknown:
                await session.get_prompt("desk_nothing")
            assert unknown.value.error.code == INVALID_PARAMS
            with pytest.raises(MCPError, match="limit: Input should be a valid integer") as bad:
                await session.get_prompt("desk_review", {"tone": "x", "limit": "many"})
            assert bad.value.error.code == INVALID_PARAMS
            with pytest.raises(MCPError, match="RuntimeError: no review today") as failed:
                await session.get_prompt("desk_broken")
            assert failed.value.error.code == INTERNAL_ERROR
            with pytest.raises(MCPError, match="prompt 'wrong' returned int, not messages"):
                await session.get_prompt("desk_wrong")
            assert value(await session.call_tool("desk_note", {"text": "still here"})) == 1


async def test_prompts_work_over_stdio(tmp_path: Path) -> None:
    async with stdio_session(PROMPTING, cwd=tmp_path) as session:
        got = await session.get_prompt("prompting_greet", {"name": "stdio"})
    assert got.messages[0].content.text == "Say hello to stdio."  # type: ignore[union-attr]


async def test_clients_hear_when_prompts_come_and_go(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(PROMPTING, allowed / "prompting.py")
    changed = Notified(PromptListChangedNotification)

    with running("--allow-load", allowed, tmp=tmp_path) as server:
        async with http_session(server.url, message_handler=changed) as session:
            assert (await session.list_prompts()).prompts == []
            await session.call_tool("load_component", {"path": "prompting.py"})
            await changed.next()
            assert "prompting_greet" in {p.name for p in (await session.list_prompts()).prompts}
            await session.call_tool("unload_component", {"name": "prompting"})
            await changed.next()
            assert {p.name for p in (await session.list_prompts()).prompts} == {
                "desk_review",
                "desk_broken",
                "desk_wrong",
            }


async def test_a_prompt_runs_in_process_through_the_host() -> None:
    async with Host() as host:
        await host.load(PROMPTING)
        assert set(host.prompts()) == {"desk_review", "desk_broken", "desk_wrong", "prompting_greet"}
        result = await host.get_prompt("prompting_greet", {"name": "in-process"})
        assert result.messages[0].content.text == "Say hello to in-process."  # type: ignore[union-attr]


async def test_completions_come_from_the_prompts_hook(tmp_path: Path) -> None:
    greet = PromptReference(type="ref/prompt", name="prompting_greet")
    with running(PROMPTING, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            found = await session.complete(greet, {"name": "name", "value": "a"})
            assert found.completion.values == ["Ada", "Alan"]
            assert found.completion.total == 2 and found.completion.has_more is False
            # An argument without a hook has no candidates; a hook that raises is an error.
            review = PromptReference(type="ref/prompt", name="desk_review")
            assert (await session.complete(review, {"name": "tone", "value": ""})).completion.values == []
            with pytest.raises(MCPError, match="LookupError: nothing for 'x'") as failed:
                await session.complete(greet, {"name": "style", "value": "x"})
            assert failed.value.error.code == INTERNAL_ERROR
            with pytest.raises(MCPError, match="unknown prompt") as unknown:
                await session.complete(
                    PromptReference(type="ref/prompt", name="nope"), {"name": "a", "value": ""}
                )
            assert unknown.value.error.code == INVALID_PARAMS


async def test_a_completion_hook_must_name_an_argument_of_its_prompt() -> None:
    @prompt(complete={"nme": lambda typed: [typed]})
    def typo(name: str) -> str:
        return name

    async with Host() as host:
        with pytest.raises(ComponentError, match="names 'nme', which is not an argument"):
            await host.load(typo)
