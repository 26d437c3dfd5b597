"""Built-in record mappers of the data stage: one raw record -> records in one of TRL's formats.

Formats (what `pipeline.data.sources.load_source` builds):
  text         {"text": str}
  messages     {"messages": [{"role", "content"}, ...]}  user/assistant alternating, optional leading
               system, ending with assistant
  preferences  {"prompt": [messages ending with user], "chosen": [1 assistant msg], "rejected": [1 assistant msg]}
  prompts      {"prompt": [messages ending with user]}

A mapper is a pure function `fn(record, fmt, cols) -> list[dict | str] | str`: the output records (a str item
is one malformed output, named by its reason), or one reason string when the whole record is malformed.
`cols` maps the mapper's own field names to the record's keys (`plan_fields` resolves it from the user's
`columns`, defaulting each field to itself). `check_record` then validates every output record, so mappers
only build structure. Reasons: missing_field, bad_type, bad_message, unknown_role (not system, user or
assistant), empty_text, bad_role_order,
bad_transcript, prompt_mismatch, identical_pair, no_reply, deleted_message (and bad_json from the readers).
"""

from __future__ import annotations

import re
from typing import Callable

FORMATS = ("text", "messages", "preferences", "prompts")
_ROLES = ("system", "user", "assistant")
_ROLE_ALIASES = {"human": "user", "prompter": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")

def msg(role: str, content) -> dict:
    return {"role": role, "content": content}


# ---------------------------------------------------------------- validation shared by all mappers
def check_messages(msgs, end: str) -> str | None:
    """Reason why `msgs` is not a valid conversation ending with role `end`, or None."""
    if not isinstance(msgs, list):
        return "bad_type"
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return "bad_message"
        if m.get("role") not in _ROLES:
            return "unknown_role"
    if any(not m["content"].strip() for m in msgs):
        return "empty_text"
    roles = [m["role"] for m in msgs]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if not roles or roles[-1] != end or any(r != ("user", "assistant")[i % 2] for i, r in enumerate(roles)):
        return "bad_role_order"
    return None


def check_record(fmt: str, rec: dict) -> str | None:
    """Reason why `rec` is not a valid `fmt` record, or None."""
    if fmt == "text":
        t = rec.get("text")
        return "bad_type" if not isinstance(t, str) else ("empty_text" if not t.strip() else None)
    if fmt == "messages":
        return check_messages(rec.get("messages"), "assistant")
    reason = check_messages(rec.get("prompt"), "user")
    if reason or fmt == "prompts":
        return reason
    for key in ("chosen", "rejected"):  # one assistant message each
        v = rec.get(key)
        if not isinstance(v, list):
            return "bad_type"
        reason = check_messages([msg("user", "-")] + v, "assistant") or (None if len(v) == 1 else "bad_role_order")
        if reason:
            return reason
    return "identical_pair" if rec["chosen"][0]["content"] == rec["rejected"][0]["content"] else None


def text_length(fmt: str, rec: dict) -> int:
    """Characters of mapped text: the text, or the sum of every message's content (prompt+chosen+rejected)."""
    if fmt == "text":
        return len(rec["text"])
    return sum(len(m["content"]) for k in ("messages", "prompt", "chosen", "rejected") for m in rec.get(k) or ())


# ---------------------------------------------------------------- helpers
def parse_hh_transcript(s) -> list[dict] | str:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [user a, assistant b] (contents stripped), or a reason."""
    if not isinstance(s, str):
        return "missing_field" if s is None else "bad_type"
    parts = _HH_TURN.split(s)
    if len(parts) < 3 or parts[0].strip():
        return "bad_transcript"
    return [msg("user" if r == "Human" else "assistant", t.strip()) for r, t in zip(parts[1::2], parts[2::2])]


def split_pair(chosen: list[dict], rejected: list[dict]) -> dict | str:
    """Two full conversations sharing a prompt -> explicit-prompt preference record (prompt = common prefix)."""
    if chosen == rejected:
        return "identical_pair"
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if len(chosen) - n != 1 or len(rejected) - n != 1:
        return "prompt_mismatch"
    return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


def as_messages(v, role: str) -> list[dict] | str:
    """A column value -> messages: a string is one `role` message; a list of {role, content} (or ShareGPT
    {from, value}) dicts is normalised (roles human/prompter -> user, gpt/bot/model -> assistant)."""
    if v is None:
        return "missing_field"
    if isinstance(v, str):
        return [msg(role, v)]
    if not isinstance(v, list):
        return "bad_type"
    out = []
    for m in v:
        if not isinstance(m, dict):
            return "bad_message"
        r = m.get("role", m.get("from"))
        out.append(msg(_ROLE_ALIASES.get(r, r), m.get("content", m.get("value"))))
    return out


def _with_system(msgs: list[dict], system) -> list[dict]:
    if isinstance(system, str) and system.strip() and not (msgs and msgs[0]["role"] == "system"):
        return [msg("system", system)] + msgs
    return msgs


def _str(rec: dict, cols: dict, key: str) -> str | None:
    """Field `key`, stripped when it is a string; None when absent."""
    v = rec.get(cols.get(key, key))
    return v.strip() if isinstance(v, str) else v


def _join(*parts) -> str:
    return "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


# ---------------------------------------------------------------- the mappers
def map_columns(rec: dict, fmt: str, cols: dict) -> list | str:
    """Rename mapping. text: {text}; messages: {messages} (list, or HH transcript string) or {user, assistant}
    string columns; preferences: {prompt, chosen, rejected} (strings or message lists) or, without prompt,
    {chosen, rejected} full conversations whose common prefix becomes the prompt; prompts: {prompt}.
    An optional `system` column is prepended as a system message."""
    get = lambda k: rec.get(cols[k]) if k in cols else None  # noqa: E731
    if fmt == "text":
        v = get("text")
        return "missing_field" if v is None else ([{"text": v}] if isinstance(v, str) else "bad_type")
    system = get("system")
    if fmt == "messages":
        if "messages" in cols:
            v = get("messages")
            m = parse_hh_transcript(v) if isinstance(v, str) else as_messages(v, "user")
        else:
            u, a = as_messages(get("user"), "user"), as_messages(get("assistant"), "assistant")
            m = u if isinstance(u, str) else (a if isinstance(a, str) else u + a)
        return m if isinstance(m, str) else [{"messages": _with_system(m, system)}]
    if fmt == "prompts":
        p = as_messages(get("prompt"), "user")
        return p if isinstance(p, str) else [{"prompt": _with_system(p, system)}]
    sides = []
    for key in ("chosen", "rejected"):
        v = get(key)
        sides.append(parse_hh_transcript(v) if isinstance(v, str) and "prompt" not in cols else
                     as_messages(v, "assistant"))
        if isinstance(sides[-1], str):
            return sides[-1]
    if "prompt" not in cols:
        pair = split_pair(*sides)
    else:
        p = as_messages(get("prompt"), "user")
        if isinstance(p, str):
            return p
        # a chosen/rejected conversation that repeats the prompt keeps only what follows it
        sides = [s[len(p):] if len(s) > len(p) and s[:len(p)] == p else s for s in sides]
        pair = {"prompt": p, "chosen": sides[0], "rejected": sides[1]}
    if isinstance(pair, dict):
        pair["prompt"] = _with_system(pair["prompt"], system)
    return pair if isinstance(pair, str) else [pair]


def map_hh(rec: dict, fmt: str, cols: dict) -> list | str:
    """Anthropic HH-RLHF {chosen, rejected} transcripts. preferences: the shared prefix is the prompt, the final
    assistant turns are chosen/rejected; messages: the chosen transcript; prompts: the chosen prefix."""
    chosen = parse_hh_transcript(rec.get(cols.get("chosen", "chosen")))
    if isinstance(chosen, str):
        return chosen
    reason = check_messages(chosen, "assistant")
    if reason:
        return reason
    if fmt == "messages":
        return [{"messages": chosen}]
    if fmt == "prompts":
        return [{"prompt": chosen[:-1]}]
    rejected = parse_hh_transcript(rec.get(cols.get("rejected", "rejected")))
    reason = rejected if isinstance(rejected, str) else check_messages(rejected, "assistant")
    if reason:
        return reason
    pair = split_pair(chosen, rejected)
    return pair if isinstance(pair, str) else [pair]


def map_oasst(rec: dict, fmt: str, cols: dict) -> list | str:
    """One OpenAssistant message tree ({"prompt": {text, role, replies: [...], rank, deleted, review_result}}).

    Messages that are deleted or failed review (review_result false) are pruned with their replies (one
    `deleted_message` each). messages: one conversation per root-to-leaf path; a path ending in a prompter
    message loses its trailing user turn (so two prompter leaves under one assistant reply give the same
    conversation, removed by dedupe), and a root without replies gives `no_reply`. preferences: every pair of
    sibling assistant replies with different `rank` (lower rank = chosen), the prompt being the conversation up
    to their parent. prompts: the root prompt. Synthetic messages are kept; `lang` is not filtered."""
    root = rec.get(cols.get("prompt", "prompt"))
    if not isinstance(root, dict):
        return "missing_field" if root is None else "bad_type"
    role = lambda m: {"prompter": "user", "assistant": "assistant"}.get(m.get("role"), m.get("role"))  # noqa: E731
    out: list = []

    def kids(m: dict) -> list[dict]:
        ok = []
        for r in m.get("replies") or ():
            if isinstance(r, dict) and not r.get("deleted") and r.get("review_result") is not False:
                ok.append(r)
            else:
                out.append("deleted_message")
        return ok

    if root.get("deleted") or root.get("review_result") is False:
        return "deleted_message"
    if fmt == "prompts":
        return [{"prompt": [msg(role(root), root.get("text"))]}]
    stack = [(root, [msg(role(root), root.get("text"))])]
    while stack:
        node, path = stack.pop()
        replies = kids(node)
        if fmt == "messages" and not replies:
            while path and path[-1]["role"] == "user":
                path = path[:-1]
            out.append({"messages": path} if path else "no_reply")
        if fmt == "preferences" and role(node) == "user":
            ranked = sorted((r for r in replies if role(r) == "assistant" and r.get("rank") is not None),
                            key=lambda r: r["rank"])
            for i, better in enumerate(ranked):
                for worse in ranked[i + 1:]:
                    if better["rank"] != worse["rank"]:
                        out.append({"prompt": path, "chosen": [msg("assistant", better.get("text"))],
                                    "rejected": [msg("assistant", worse.get("text"))]})
        stack.extend((r, path + [msg(role(r), r.get("text"))]) for r in reversed(replies))
    return out


def map_dolly(rec: dict, fmt: str, cols: dict) -> list | str:
    """databricks-dolly {instruction, context, response}: user = instruction (+ blank line + context),
    assistant = response."""
    ins = _str(rec, cols, "instruction")
    if not isinstance(ins, str):
        return "missing_field" if ins is None else "bad_type"
    if not ins:
        return "empty_text"
    user = [msg("user", _join(ins, _str(rec, cols, "context")))]
    if fmt == "prompts":
        return [{"prompt": user}]
    resp = _str(rec, cols, "response")
    return "missing_field" if resp is None else [{"messages": user + [msg("assistant", resp)]}]


def map_alpaca(rec: dict, fmt: str, cols: dict) -> list | str:
    """Alpaca {instruction, input, output}: user = instruction (+ blank line + input), assistant = output.
    Self-Instruct seed tasks {instruction, instances: [{input, output}, ...]} give one record per instance."""
    ins = _str(rec, cols, "instruction")
    if not isinstance(ins, str):
        return "missing_field" if ins is None else "bad_type"
    if not ins:
        return "empty_text"
    insts = rec.get(cols.get("instances", "instances"))
    if insts is None:
        insts = [{"input": rec.get(cols.get("input", "input")), "output": rec.get(cols.get("output", "output"))}]
    if not isinstance(insts, list):
        return "bad_type"
    out: list = []
    for inst in insts:
        if not isinstance(inst, dict):
            out.append("bad_type")
            continue
        user = [msg("user", _join(ins, inst.get("input")))]
        if fmt == "prompts":
            out.append({"prompt": user})
        elif not isinstance(inst.get("output"), str):
            out.append("missing_field" if inst.get("output") is None else "bad_type")
        else:
            out.append({"messages": user + [msg("assistant", inst["output"].strip())]})
    return out


def map_text(rec: dict, fmt: str, cols: dict) -> list | str:
    """Plain text: one block of a text file (see readers.iter_text_blocks) or a `text` column -> {"text"},
    surrounding whitespace stripped."""
    t = rec.get(cols.get("text", "text"))
    if not isinstance(t, str):
        return "missing_field" if t is None else "bad_type"
    return [{"text": t.strip()}]


# ---------------------------------------------------------------- registry and field planning
MAPPERS: dict[str, Callable] = {
    "columns": map_columns, "hh": map_hh, "oasst": map_oasst, "dolly": map_dolly, "alpaca": map_alpaca,
    "text": map_text,
}
MAPPER_FORMATS = {
    "columns": FORMATS, "hh": ("preferences", "messages", "prompts"), "oasst": ("messages", "preferences", "prompts"),
    "dolly": ("messages", "prompts"), "alpaca": ("messages", "prompts"), "text": ("text",),
}


def _fields(mapper: str, fmt: str, explicit: dict, have: Callable[[str], bool]):
    """(required: list of alternatives tuples, optional: list, valid target names) of a mapper for a format."""
    if mapper == "columns":
        if fmt == "text":
            return [("text",)], [], ("text",)
        if fmt == "messages":
            pair = bool({"user", "assistant"} & explicit.keys()) or (
                "messages" not in explicit and not have("messages"))
            return ([("user",), ("assistant",)] if pair else [("messages",)]), ["system"], (
                "messages", "user", "assistant", "system")
        if fmt == "preferences":
            with_prompt = "prompt" in explicit or have("prompt")
            return [("chosen",), ("rejected",)] + ([("prompt",)] if with_prompt else []), ["system"], (
                "prompt", "chosen", "rejected", "system")
        return [("prompt",)], ["system"], ("prompt", "system")
    if mapper == "hh":
        req = [("chosen",)] + ([("rejected",)] if fmt == "preferences" else [])
        return req, [], ("chosen", "rejected")
    if mapper == "oasst":
        return [("prompt",)], [], ("prompt",)
    if mapper == "dolly":
        return [("instruction",)] + ([("response",)] if fmt == "messages" else []), ["context"], (
            "instruction", "context", "response")
    if mapper == "alpaca":
        req = [("instruction",)] + ([("output", "instances")] if fmt == "messages" else [])
        return req, ["input", "output", "instances"], ("instruction", "input", "output", "instances")
    return [("text",)], [], ("text",)


def plan_fields(mapper: str, fmt: str, explicit: dict, available) -> tuple[dict, list, list]:
    """Resolve the mapper's field -> column mapping. `available`: the file's columns (None = unknown).
    Returns (cols, missing [(field, column)], unknown fields in `explicit`)."""
    have = (lambda c: True) if available is None else (lambda c: c in available)  # noqa: E731
    required, optional, valid = _fields(mapper, fmt, explicit, have)
    src = lambda k: explicit.get(k, k)  # noqa: E731
    cols, missing = {}, []
    for alts in required:
        present = [k for k in alts if have(src(k))]
        if not present:
            missing.append((alts[0], src(alts[0])))
        cols.update({k: src(k) for k in present})
    for k in optional:
        if have(src(k)):
            cols[k] = src(k)
        elif k in explicit:
            missing.append((k, src(k)))
    return cols, missing, [k for k in explicit if k not in valid]


def valid_fields(mapper: str, fmt: str) -> tuple[str, ...]:
    """The field names `columns` may map for this mapper and format."""
    return _fields(mapper, fmt, {}, lambda c: True)[2]
