"""A fake chat model with structured output, for testing LLM-based plugins offline."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field


class FakeStructuredChatModel(BaseChatModel):
    """A chat model for offline tests that answers with structured output (tool calls).

    LangChain's fake chat models do not implement ``bind_tools``, so they cannot serve
    ``with_structured_output``; this one does. Each call answers with the next item of
    ``responses`` (cycling): a dict or pydantic model is returned as the arguments of a call to
    the first bound tool (the structured output schema), an `AIMessage` as it is, and an
    exception is raised. Every call's input messages are appended to ``calls``.

    Example:
        >>> from pydantic import BaseModel
        >>> class Answer(BaseModel):
        ...     text: str
        >>> model = FakeStructuredChatModel(responses=[{"text": "hi"}])
        >>> model.with_structured_output(Answer).invoke("hello")
        Answer(text='hi')
        >>> model.calls[0][0].content
        'hello'
    """

    responses: list[Any] = Field(default_factory=list)
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    respond: Callable[[list[BaseMessage]], Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "fake-structured-chat-model"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[Any, Any]:
        """Bind tools (or a structured output schema) in OpenAI format, as real models do."""
        return self.bind(
            tools=[convert_to_openai_tool(tool) for tool in tools], tool_choice=tool_choice, **kwargs
        )

    def _next_response(self, messages: list[BaseMessage]) -> Any:
        if self.respond is not None:
            return self.respond(messages)
        if not self.responses:
            raise ValueError("FakeStructuredChatModel needs responses or respond")
        return self.responses[(len(self.calls) - 1) % len(self.responses)]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        response = self._next_response(messages)
        if isinstance(response, BaseException):
            raise response
        if isinstance(response, BaseMessage):
            message = response
        else:
            arguments = response.model_dump() if isinstance(response, BaseModel) else response
            tools = kwargs.get("tools") or []
            if tools:
                name = tools[0]["function"]["name"]
                call = {"name": name, "args": arguments, "id": f"call-{len(self.calls)}", "type": "tool_call"}
                message = AIMessage("", tool_calls=[call])
            else:
                message = AIMessage(json.dumps(arguments))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # In the calling task, not a thread pool: tests see calls in order, without threads.
        return self._generate(messages, stop, None, **kwargs)
