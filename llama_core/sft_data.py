"""Instruction data read from JSONL: chat-format `{"messages": [...]}` lines or the Alpaca-style
`instruction`/`input`/`output` form, each validated into a list of `Message`s.

A conversation is an optional system message, then user and assistant turns alternating, starting
with the user and ending with the assistant. A line that breaks this is named by its number: it
stops the reading, or with `skip_bad` is left out and reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from llama_core.chat import Message

ROLES = ("system", "user", "assistant")


@dataclass
class Examples:
    """The conversations of a file, and the lines left out (with why)."""

    conversations: list[list[Message]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_example(obj) -> list[Message]:
    """One JSON value -> a validated conversation; ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        raw = obj["messages"]
        if not isinstance(raw, list) or not raw:
            raise ValueError("'messages' must be a non-empty list of {role, content} objects")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"message {i} must be an object with string 'role' and 'content'")
            messages.append(Message(m["role"], m["content"]))
        return check_conversation(messages)
    if "instruction" in obj and "output" in obj:
        fields = {k: obj.get(k, "") for k in ("instruction", "input", "output")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise ValueError("'instruction', 'input' and 'output' must be strings")
        prompt = fields["instruction"] + (f"\n\n{fields['input']}" if fields["input"] else "")
        return check_conversation([Message("user", prompt), Message("assistant", fields["output"])])
    raise ValueError("a line needs 'messages' (chat format) or 'instruction' and 'output' (Alpaca form); "
                     f"found keys {sorted(obj)}")


def check_conversation(messages: list[Message]) -> list[Message]:
    """The conversation itself if its roles are known and in order; else ValueError."""
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise ValueError(f"message {i} has unknown role {m.role!r}; roles are {', '.join(ROLES)}")
    turns = messages[1:] if messages[0].role == "system" else messages
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            where = i + len(messages) - len(turns)
            raise ValueError(f"message {where} is {m.role!r} where {expected!r} was expected: after an optional "
                             "system message, user and assistant turns alternate, starting with the user")
    if not any(m.role == "assistant" for m in turns):
        raise ValueError("the conversation has no assistant turn: there is nothing to learn from it")
    if turns[-1].role != "assistant":
        raise ValueError("the conversation ends with a user turn that has no assistant reply")
    return messages


def read_examples(path: str | os.PathLike, skip_bad: bool = False) -> Examples:
    """Every conversation of a JSONL file; a bad line is an error naming it, or skipped with `skip_bad`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"instruction data {path} does not exist")
    out = Examples()
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.conversations.append(parse_example(json.loads(line)))
            except json.JSONDecodeError as err:
                problem = f"line {n}: not valid JSON ({err.msg} at column {err.colno})"
            except ValueError as err:
                problem = f"line {n}: {err}"
            else:
                continue
            if not skip_bad:
                raise ValueError(f"{path}, {problem}; fix the line or pass --skip-bad-lines to leave such lines out")
            out.skipped.append(problem)
    if not out.conversations:
        raise ValueError(f"{path} holds no usable conversation" + (f" ({len(out.skipped)} lines skipped)"
                                                                    if out.skipped else ""))
    return out


def to_jsonl(conversations: list[list[Message]]) -> str:
    """Conversations in the chat format, a line each."""
    return "".join(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in c]},
                              ensure_ascii=False) + "\n" for c in conversations)
