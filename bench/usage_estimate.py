"""How far the usage estimates are from what OpenAI billed: a corpus of recorded answers, each counted as
if it had been cut at its end, against the usage the API reported for it.

    python -m bench.usage_estimate CASSETTES...      # folders of VCR cassettes (YAML), searched whole

The corpus is recorded traffic with the real API: VCR cassettes, as the test suites of agent libraries
keep them (pydantic-ai's ``tests/**/cassettes``, say), of chat completions requests and their answers,
with usage. None ships with this project (they are other projects' files, and this machine reaches no
model): bring a checkout. For each request the API answered with usage, the prompt is counted from the
request body (messages, tools) and the completion from the answer (text, refusal, tool calls), with the
model's tokenizer, exactly as a stopped stream is; hidden reasoning tokens, which no stream shows, are
taken out of the API's count before the two are compared, and reported apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from flask_chatstream._chat import ChatRequest
from flask_chatstream._usage import prompt_tokens
from flask_chatstream._usage.estimate import completion_tokens
from flask_chatstream._usage.tokens import tokenizer_name


def answers(folder: Path) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(cassette, request body, the answer's message, usage) for each chat completion with usage."""
    for path in sorted(folder.rglob("*.yaml")):
        try:
            cassette = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for interaction in (cassette or {}).get("interactions") or []:
            request, response = interaction.get("request") or {}, interaction.get("response") or {}
            if not str(request.get("uri", "")).endswith("/chat/completions"):
                continue
            body = request.get("parsed_body") or _json(request.get("body"))
            answer = response.get("parsed_body") or _json((response.get("body") or {}).get("string"))
            found = _streamed(answer) if isinstance(answer, str) else _whole(answer)
            if isinstance(body, dict) and found is not None:
                yield (str(path.relative_to(folder)), body, *found)


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("string") if "string" in value else value
    try:
        return json.loads(value) if isinstance(value, (str, bytes)) else None
    except ValueError:
        return value if isinstance(value, str) else None


def _whole(answer: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if not isinstance(answer, dict) or not isinstance(answer.get("usage"), dict) or not answer.get("choices"):
        return None
    if len(answer["choices"]) != 1:
        return None
    return answer["choices"][0].get("message") or {}, answer["usage"]


def _streamed(text: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A streamed answer's chunks, assembled."""
    message: dict[str, Any] = {"content": "", "tool_calls": {}}
    usage = None
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            message["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                into = message["tool_calls"].setdefault(call.get("index", 0), {"function": {"name": "", "arguments": ""}})
                function = call.get("function") or {}
                into["function"]["name"] += function.get("name") or ""
                into["function"]["arguments"] += function.get("arguments") or ""
    if usage is None:
        return None
    message["tool_calls"] = list(message["tool_calls"].values())
    return message, usage


def measure(folders: list[Path]) -> dict[str, Any]:
    rows = []
    for folder in folders:
        for name, body, message, usage in answers(folder):
            model = str(body.get("model", ""))
            if tokenizer_name(model) is None or not isinstance(body.get("messages"), list):
                continue
            params = {key: body[key] for key in ("tools", "response_format") if body.get(key)}
            request = ChatRequest(messages=body["messages"], model=model, max_tokens=1, params=params)
            calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []
                     if isinstance(c, dict) and isinstance(c.get("function"), dict)]
            hidden = ((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
            rows.append({"cassette": name, "model": model, "tools": bool(body.get("tools")), "calls": len(calls),
                         "prompt": (prompt_tokens(request), usage["prompt_tokens"]),
                         "completion": (completion_tokens(model, [message.get("content"), message.get("refusal")],
                                                          calls), usage["completion_tokens"] - hidden),
                         "hidden": hidden})
    return summary(rows)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"answers": len(rows), "models": sorted({r["model"] for r in rows})}
    for part in ("prompt", "completion"):
        for label, subset in (("all", rows), ("without tools", [r for r in rows if not r["tools"] and not r["calls"]]),
                              ("with tools", [r for r in rows if r["tools"] or r["calls"]])):
            pairs = [r[part] for r in subset if r[part][1] > 0]
            if not pairs:
                continue
            errors = [(ours - theirs) / theirs for ours, theirs in pairs]
            absolute = sorted(abs(e) for e in errors)
            out[f"{part}, {label}"] = {
                "n": len(pairs), "median error": round(statistics.median(errors), 4),
                "median |error|": round(statistics.median(absolute), 4),
                "p90 |error|": round(absolute[int(0.9 * (len(absolute) - 1))], 4),
                "within 10% or 2 tokens": round(sum(abs(o - t) <= max(2, t / 10) for o, t in pairs) / len(pairs), 3),
                "total ours / theirs": round(sum(o for o, _ in pairs) / sum(t for _, t in pairs), 4)}
    out["answers with hidden reasoning"] = sum(1 for r in rows if r["hidden"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    result = measure(args.folders)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not result["answers"]:
        sys.exit("no recorded chat completions with usage were found")


if __name__ == "__main__":
    main()
