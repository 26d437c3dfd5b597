"""`pipeline chat` and `pipeline generate` on the nano run: what a path means, greedy replies, prompt files, errors."""

import io
import json
import shutil

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline import chat as chat_module
from pipeline.checkpoints import causal_lm_folder
from pipeline.cli import main
from pipeline.metrics.qa import generate_replies

PROMPTS = ["How old is Mara?", "Where does the person who owns a cat live, and what is their job?", "Hi"]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def one_line(err: str) -> str:
    """The only line of `err` (a user error is one line, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_greedy_generate_gives_greedy_responses(nano_run, tmp_path):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS[:2]) + "\n\n  \n" + PROMPTS[2] + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["generate", str(nano_run / "sft" / "final"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--out", str(out), "--temperature", "0", "--max-new-tokens", "8", "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(str(nano_run / "sft" / "final"))
    tokenizer = AutoTokenizer.from_pretrained(str(nano_run / "sft" / "final"))
    expected = generate_replies(model, tokenizer, [user(p) for p in PROMPTS], max_new_tokens=8, batch_size=2)
    assert [row["prompt"] for row in rows] == PROMPTS  # blank lines skipped, input order kept
    assert [row["response"] for row in rows] == expected


def test_jsonl_prompts_to_stdout_from_the_run_folder(nano_run, tmp_path, capsys):
    records = [{"prompt": "Hi"}, {"prompt": user("How old is Mara?")},
               {"messages": user("Hi") + [{"role": "assistant", "content": "reference reply"}]}]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n"
                                            + json.dumps(records[2]) + "\n")
    assert main(["generate", str(nano_run), "--prompts", str(tmp_path / "prompts.jsonl"), "--max-new-tokens", "4",
                 "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert "using ppo/final" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["prompt"] for row in rows] == [records[0]["prompt"], records[1]["prompt"], records[2]["messages"]]
    assert rows[0]["response"] == rows[2]["response"]  # the reference reply of `messages` is not part of the prompt
    assert all(isinstance(row["response"], str) for row in rows)


def test_run_folder_means_its_newest_policy(nano_run, tmp_path):
    assert causal_lm_folder(str(nano_run)) == nano_run / "ppo" / "final"
    run = tmp_path / "run"  # no ppo/final yet: the SFT policy
    shutil.copytree(nano_run / "sft" / "final", run / "sft" / "final")
    shutil.copytree(nano_run / "pretrain" / "final", run / "pretrain" / "final")
    shutil.copy(nano_run / "config.yaml", run / "config.yaml")
    assert causal_lm_folder(str(run)) == run / "sft" / "final"


@pytest.mark.parametrize("folder, says", [
    ("reward/final", "a reward (or value) model (LlamaForSequenceClassification)"),
    ("empty", "an empty folder"),
    ("tokenizer/final", "a tokenizer without a model"),
])
def test_a_folder_that_is_no_causal_lm_is_a_one_line_error(nano_run, tmp_path, capsys, folder, says):
    path = tmp_path / "empty" if folder == "empty" else nano_run / folder
    path.mkdir(exist_ok=True)
    assert main(["chat", str(path)]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith(f"error: {path}: {says}") and captured.out == ""



@pytest.mark.parametrize("content, says", [
    ('{"prompt": "Hi"}\n\n{"prompt": "Hi"\n', "line 3: not JSON"),
    ('{"prompt": "Hi"}\n{"question": "Hi"}\n', "line 2: no prompt"),
    ('{"prompt": [{"role": "user"}]}\n', "line 1: no prompt"),
    ("\n  \n", "no prompts"),
])
def test_bad_prompt_files_name_file_and_line(nano_run, tmp_path, capsys, content, says):
    path = tmp_path / ("prompts.jsonl" if "{" in content else "prompts.txt")
    path.write_text(content)
    assert main(["generate", str(nano_run / "sft" / "final"), "--prompts", str(path)]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: {path}: {says}")
    assert main(["generate", str(nano_run / "sft" / "final"), "--prompts", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: no such prompts file" in capsys.readouterr().err


def test_chat_keeps_the_conversation_until_reset(nano_run, monkeypatch, capsys):
    seen = []

    def recording_prompt_ids(tokenizer, messages):
        seen.append([dict(m) for m in messages])
        return real_prompt_ids(tokenizer, messages)

    real_prompt_ids = chat_module.prompt_ids
    monkeypatch.setattr(chat_module, "prompt_ids", recording_prompt_ids)
    lines = ["Hi", "How old is Mara?", "/reset", "Bye", "/system Be brief.", "Ok", "/exit", "No"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", str(nano_run / "sft" / "final"), "--temperature", "0", "--max-new-tokens", "4"]) == 0
    first, second, after_reset, with_system = seen
    assert first == user("Hi")
    assert second[:2] == first + [{"role": "assistant", "content": second[1]["content"]}]
    assert second[2:] == user("How old is Mara?")
    assert after_reset == user("Bye")
    assert with_system == [{"role": "system", "content": "Be brief."}] + user("Ok")
    captured = capsys.readouterr()
    assert "chatting with" in captured.err and second[1]["content"] in captured.out
    assert captured.out.count("\n") == 4  # one streamed reply a turn; nothing after /exit


def test_checkpoint_without_tokenizer_and_lora_adapter(nano_run, tmp_path, capsys):
    stage = tmp_path / "run" / "sft"
    shutil.copytree(nano_run / "sft" / "checkpoint-10", stage / "checkpoint-10",
                    ignore=shutil.ignore_patterns("tokenizer*", "chat_template*", "*.pt", "*.pth"))
    shutil.copytree(nano_run / "sft" / "final", stage / "final")
    (tmp_path / "p.txt").write_text("Hi\n")
    assert main(["generate", str(stage / "checkpoint-10"), "--prompts", str(tmp_path / "p.txt")]) == 0
    assert f"using {stage / 'final'}'s" in capsys.readouterr().err
    shutil.rmtree(stage / "final")
    assert main(["generate", str(stage / "checkpoint-10"), "--prompts", str(tmp_path / "p.txt")]) == 2
    assert "no tokenizer (looked in" in one_line(capsys.readouterr().err)

    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(str(nano_run / "sft" / "final"))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(str(nano_run / "sft" / "final")).save_pretrained(tmp_path / "adapter")
    for model in (tmp_path / "adapter", nano_run / "sft" / "final"):  # a fresh LoRA (B = 0) changes nothing
        out = tmp_path / f"{model.name}.jsonl"
        assert main(["generate", str(model), "--prompts", str(tmp_path / "p.txt"), "--out", str(out)]) == 0
    assert (tmp_path / "adapter.jsonl").read_text() == (tmp_path / "final.jsonl").read_text()
