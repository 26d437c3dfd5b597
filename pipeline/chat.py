"""Talk to a causal LM the pipeline wrote: `pipeline chat` in a terminal, `pipeline generate` over a file of prompts.

    pipeline chat runs/tiny                                   # the run's newest policy (ppo, else sft, else pretrain)
    pipeline chat runs/tiny/sft/final --temperature 0.7 --top-p 0.9 --system "Answer in one sentence."
    echo -e "Where does Mara live?\\n/reset\\nHow old is Mara?" | pipeline chat runs/tiny --temperature 0
    pipeline generate runs/tiny --prompts prompts.jsonl --out replies.jsonl --temperature 0

PATH_OR_HUB_ID (resolved by `pipeline.checkpoints.causal_lm_folder`, loaded by its `load_model`) may be
- a causal LM saved with `save_pretrained` and its tokenizer (any stage's `final/`, a Hub model repo);
- a LoRA adapter folder (`adapter_config.json`): its base model is loaded and the adapter merged into it;
- a trainer's `checkpoint-<step>/`, a ppo one too (its policy, in the architecture of the run's `sft/final`): a
  checkpoint without a tokenizer takes the one of its stage's `final/`, else the run's `sft/final/` or
  `tokenizer/final/`;
- a stage folder (`runs/tiny/sft`): its `final/`;
- a run folder (`config.yaml` inside): its newest policy, `ppo/final`, else `sft/final`, else `pretrain/final`
  (named on stderr).
Anything else (a reward or value model, a value head, a tokenizer, an empty folder) is a one-line error that
says what the folder is. Remote code is never trusted.

Chat reads lines from stdin (a terminal or a pipe), keeps the conversation as messages, renders it with the
tokenizer's chat template and streams the reply to stdout (`TextStreamer`); the banner and notes go to stderr.
Commands: `/reset` forgets the conversation, `/system TEXT` sets the system prompt (and resets), `/exit` or
end of input quits. When the conversation outgrows the model's context, the oldest exchanges are left out of the
prompt and the reply is cut to the room left (`fitting_prompt`, said on stderr).

Generate reads prompts from a `.txt` file (one prompt per line, blank lines skipped) or a `.jsonl` file (one object
a line: `prompt`, a string or a list of chat messages, or `messages`, a conversation whose trailing assistant
turn, if any, is dropped as the reference reply), and writes one JSON line `{"prompt", "response"}` per prompt,
in input order, to `--out` (atomically) or stdout. Batched with left padding as `pipeline.metrics.qa` batches
greedy decoding; `--temperature 0` is greedy decoding and gives exactly `greedy_responses`'s replies.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from pipeline.artifacts import atomic_write
from pipeline.checkpoints import CAUSAL_LM, causal_lm_folder, load_model, load_tokenizer
from pipeline.errors import PipelineError
from pipeline.metrics.qa import cut_at_eos, prompt_ids

CHAT_COMMANDS = "/reset forgets the conversation, /system TEXT sets the system prompt, /exit quits"


# ---------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of `pipeline chat` (name "chat") or `pipeline generate` (name "generate")."""
    parser.add_argument("model", metavar="PATH_OR_HUB_ID",
                        help="a model folder, LoRA adapter, checkpoint, stage or run folder, or a Hub model id")
    if name == "generate":
        parser.add_argument("--prompts", required=True, metavar="FILE",
                            help=".txt (one prompt a line) or .jsonl (objects with `prompt` or `messages`)")
        parser.add_argument("--out", metavar="FILE.jsonl", help="write JSON lines here (default: stdout)")
        parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    else:
        parser.add_argument("--system", default="", metavar="TEXT", help="system prompt (default: none)")
    parser.add_argument("--temperature", type=float, default=0.0 if name == "generate" else 0.7,
                        help="sampling temperature; 0 = greedy decoding")
    parser.add_argument("--top-p", type=float, default=1.0 if name == "generate" else 0.9,
                        help="nucleus sampling: keep the smallest set of tokens with this much probability")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="most tokens in one reply")
    parser.add_argument("--seed", type=int, default=0, help="seeds sampling")


def run_command(args: argparse.Namespace) -> int:
    options = Sampling.from_args(args)
    if args.command == "generate":
        if args.batch_size < 1:
            raise PipelineError(f"--batch-size: must be at least 1, got {args.batch_size}")
        prompts = read_prompts(Path(args.prompts))  # a bad prompts file fails before the model loads
        model, tokenizer = load_chat_model(args.model)
        write_generations(model, tokenizer, prompts, options, args.batch_size, args.out)
    else:
        model, tokenizer = load_chat_model(args.model)
        print(f"chatting with {model.name_or_path}: {CHAT_COMMANDS}", file=sys.stderr)
        chat(model, tokenizer, read_lines(sys.stdin), options, system=args.system)
    return 0


@dataclass
class Sampling:
    """How replies are decoded: greedy at temperature 0, else sampled with temperature and top-p."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Sampling":
        options = cls(args.temperature, args.top_p, args.max_new_tokens, args.seed)
        if options.temperature < 0:
            raise PipelineError(f"--temperature: must be >= 0, got {options.temperature}")
        if not 0 < options.top_p <= 1:
            raise PipelineError(f"--top-p: must be in (0, 1], got {options.top_p}")
        if options.max_new_tokens < 1:
            raise PipelineError(f"--max-new-tokens: must be at least 1, got {options.max_new_tokens}")
        return options

    def generate_kwargs(self, tokenizer) -> dict:
        decoding = dict(do_sample=False) if self.temperature == 0 else dict(
            do_sample=True, temperature=self.temperature, top_p=self.top_p)
        return dict(max_new_tokens=self.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id, **decoding)


# ---------------------------------------------------------------- loading the model
def load_chat_model(path_or_id: str):
    """(model in eval mode on the GPU if there is one, tokenizer with a chat template and a pad token)."""
    folder = causal_lm_folder(path_or_id)
    tokenizer = load_tokenizer(folder)
    if not tokenizer.chat_template:
        raise PipelineError(f"{tokenizer.name_or_path}: the tokenizer has no chat template; chat and generate need one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model(folder, CAUSAL_LM)
    model.name_or_path = str(folder)
    return model, tokenizer


# ---------------------------------------------------------------- chat
def read_lines(stream: TextIO, prompt: str = "you> ") -> Iterator[str]:
    """Lines of `stream` without their newline; shows `prompt` on stderr when it is a terminal."""
    interactive = stream.isatty()
    while True:
        if interactive:
            print(prompt, end="", file=sys.stderr, flush=True)
        line = stream.readline()
        if not line:
            return
        yield line.rstrip("\n")


def chat(model, tokenizer, lines: Iterable[str], options: Sampling, system: str = "") -> list[dict]:
    """Answer each line of `lines` in one conversation (commands in the module docstring); returns the messages."""
    import torch

    torch.manual_seed(options.seed)
    messages: list[dict] = []
    for line in lines:
        text = line.strip()
        if not text:
            continue
        command, _, argument = text.partition(" ")
        if command in ("/exit", "/quit"):
            break
        if command in ("/reset", "/system"):
            system = argument.strip() if command == "/system" else system
            messages = []
            print(f"(new conversation{'; system prompt: ' + system if system else ''})", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(f"unknown command {command}: {CHAT_COMMANDS}", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": text})
        reply = stream_reply(model, tokenizer, conversation(system, messages), options)
        if reply is None:  # the message alone fills the model's context
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": reply})
    return messages


def conversation(system: str, messages: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def stream_reply(model, tokenizer, messages: list[dict], options: Sampling) -> str | None:
    """Generate the assistant's reply to `messages`, streaming it to stdout; returns its text, or None when the
    newest message fills the model's context (`fitting_prompt`)."""
    import torch
    from transformers import TextStreamer

    fitted = fitting_prompt(model, tokenizer, messages, options.max_new_tokens)
    if fitted is None:
        return None
    ids, max_new_tokens = fitted
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    input_ids = torch.tensor([ids], device=model.device)
    kwargs = {**options.generate_kwargs(tokenizer), "max_new_tokens": max_new_tokens}
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                             **kwargs)
    reply = cut_at_eos(out[0, len(ids):].tolist(), tokenizer.eos_token_id)
    return tokenizer.decode(reply, skip_special_tokens=True).strip()


def fitting_prompt(model, tokenizer, messages: list[dict], max_new_tokens: int) -> tuple[list[int], int] | None:
    """(chat-template ids of `messages`, tokens the reply may have) within the model's context, when it has a known
    one: the oldest exchanges are left out while the prompt leaves less than min(max_new_tokens, context / 2) for
    the reply, and the reply is cut to what is left. The system prompt and the newest user turn always stay; when
    they alone fill the context, None (said on stderr)."""
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    head = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(head):]
    ids = prompt_ids(tokenizer, head + turns)
    if not context:
        return ids, max_new_tokens
    budget, dropped = min(max_new_tokens, context // 2), 0
    while len(ids) + budget > context and len(turns) > 1:
        turns = turns[2:] if len(turns) > 2 else turns[-1:]  # one user turn and its reply at a time
        dropped += 1
        ids = prompt_ids(tokenizer, head + turns)
    if len(ids) >= context:
        print(f"(not answered: the message fills the model's context of {context} tokens; write less or /reset)",
              file=sys.stderr)
        return None
    if dropped:
        print(f"(left the {dropped} oldest exchange(s) out: the model's context holds {context} tokens)",
              file=sys.stderr)
    return ids, min(max_new_tokens, context - len(ids))


# ---------------------------------------------------------------- generate
def read_prompts(path: Path) -> list[tuple[object, list[dict]]]:
    """[(prompt as given, conversation to answer)] from a .txt or .jsonl file (module docstring)."""
    if not path.is_file():
        raise PipelineError(f"{path}: no such prompts file")
    if path.suffix == ".json":
        raise PipelineError(f"{path}: expected .txt (one prompt a line) or .jsonl (one JSON object a line)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix in (".jsonl", ".ndjson"):
        prompts = [jsonl_prompt(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    else:
        prompts = [(line.strip(), [{"role": "user", "content": line.strip()}]) for line in lines if line.strip()]
    if not prompts:
        raise PipelineError(f"{path}: no prompts (the file is empty or blank)")
    return prompts


def jsonl_prompt(path: Path, number: int, line: str) -> tuple[object, list[dict]]:
    """One JSONL line as (prompt as given, conversation); a one-line error naming the file and line otherwise."""
    where = f"{path}: line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise PipelineError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise PipelineError(f"{where}: expected a JSON object with `prompt` or `messages`, got {type(record).__name__}")
    given = record["prompt"] if "prompt" in record else record.get("messages")
    if isinstance(given, str) and given.strip():
        return given, [{"role": "user", "content": given}]
    if is_message_list(given):
        messages = list(given)
        while messages and messages[-1]["role"] == "assistant" and "prompt" not in record:
            messages.pop()  # a `messages` conversation ends with its reference reply
        if messages:
            return given, messages
    raise PipelineError(f"{where}: no prompt (expected `prompt`: a non-empty string or a list of "
                        "{role, content} messages, or `messages`)")


def is_message_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def batched_replies(model, tokenizer, prompts: list[list[dict]], options: Sampling, batch_size: int,
                    progress=None) -> list[str]:
    """Replies to conversational prompts, batched with left padding as `pipeline.metrics.qa.greedy_responses`
    batches (the same replies at temperature 0), cut at the first EOS, special tokens dropped, stripped."""
    import torch

    pad, replies = tokenizer.pad_token_id, []
    torch.manual_seed(options.seed)
    for start in range(0, len(prompts), batch_size):
        rows = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **options.generate_kwargs(tokenizer))
        replies += [tokenizer.decode(cut_at_eos(row, tokenizer.eos_token_id), skip_special_tokens=True).strip()
                    for row in out[:, width:].tolist()]
        if progress is not None:
            progress.update(len(rows))
    return replies


def write_generations(model, tokenizer, prompts: list[tuple[object, list[dict]]], options: Sampling,
                      batch_size: int, out: str | None) -> None:
    """Generate a reply to every prompt (a progress bar on stderr) and write the JSON lines to `out` or stdout."""
    from tqdm.auto import tqdm

    with tqdm(total=len(prompts), desc="generate", unit="prompt", file=sys.stderr) as progress:
        replies = batched_replies(model, tokenizer, [p for _, p in prompts], options, batch_size, progress)
    text = "".join(json.dumps({"prompt": given, "response": reply}, ensure_ascii=False) + "\n"
                   for (given, _), reply in zip(prompts, replies))
    if out:
        atomic_write(Path(out), text)
        print(f"wrote {len(replies)} responses to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
