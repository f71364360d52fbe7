#!/usr/bin/env python3
"""Expected chat-template renderings for tests/test_chat.c.

The REAL chat_template strings of public models (as they appear in those
models' tokenizer_config.json) are rendered with jinja2 exactly the way
transformers' apply_chat_template does it: ImmutableSandboxedEnvironment
(trim_blocks=True, lstrip_blocks=True), a raise_exception() global, and
bos_token / eos_token / add_generation_prompt variables.  As a cross-check,
each rendering is also produced by transformers' own
PreTrainedTokenizerBase.apply_chat_template machinery (render_jinja_template)
when that is importable, and the two must agree.

    pip install jinja2 transformers
    python3 tests/ref/make_chat_ref.py --out tests/data/chat

Writes tests/data/chat/expected.json:
  templates: name -> {format, source, template, bos_token, eos_token,
                      default_system (what chat_detect must extract, or null),
                      assistant_end (the terminator an assistant span ends with)}
  cases:     [{template, format, messages, add_generation_prompt,
               text (rendered) | error (the template raised: its message)}]
Where the sources came from is in tests/data/chat/README.md.
"""
import argparse
import json
import os
import sys

import jinja2
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# --------------------------------------------------------------- templates
# Each string below is the Jinja source (i.e. the JSON-decoded value of
# "chat_template"), copied from the sources listed in README.md.

# Qwen/Qwen2-7B-Instruct tokenizer_config.json (also Qwen2-{0.5,1.5,72}B-Instruct).
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# teknium/OpenHermes-2.5-Mistral-7B: plain ChatML, no default system prompt.
OPENHERMES = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json (the revision with
# the add_generation_prompt condition; the first upload emitted the header always).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# meta-llama/Llama-2-7b-chat-hf tokenizer_config.json (same in 13b/70b-chat-hf).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# mistralai/Mistral-7B-Instruct-v0.2 tokenizer_config.json, the current
# revision (mistralai's "v1" template that accepts a leading system message).
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# HuggingFaceH4/zephyr-7b-beta tokenizer_config.json.
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# plumb's own "plain" format (no model uses it; this template IS its definition).
PLAIN = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)

# Longer templates live in chat_templates/ beside this script, as the files
# their models ship them in (chat_template.jinja): Qwen3's and Llama 3.1's.
HERE = os.path.dirname(os.path.abspath(__file__))


def template_file(name, trailing_newline):
    with open(os.path.join(HERE, "chat_templates", name), encoding="utf-8") as f:
        t = f.read()
    return t if trailing_newline else t[:-1]


# Qwen/Qwen3-8B tokenizer_config.json (the hybrid thinking models
# Qwen3-0.6B ... Qwen3-32B), as TRL keeps it in trl/chat_templates/qwen3.jinja.
QWEN3 = template_file("qwen3.jinja", False)
# meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json (ends in a newline).
LLAMA31 = template_file("llama31.jinja", True)

TEMPLATES = {
    "qwen2": dict(format="chatml", template=QWEN2, bos_token=None, eos_token="<|im_end|>",
                  default_system="You are a helpful assistant.", assistant_end="<|im_end|>",
                  source="Qwen/Qwen2-7B-Instruct tokenizer_config.json"),
    "openhermes": dict(format="chatml", template=OPENHERMES, bos_token="<s>", eos_token="<|im_end|>",
                       default_system=None, assistant_end="<|im_end|>",
                       source="teknium/OpenHermes-2.5-Mistral-7B tokenizer_config.json"),
    "llama3": dict(format="llama3", template=LLAMA3, bos_token="<|begin_of_text|>",
                   eos_token="<|eot_id|>", default_system=None, assistant_end="<|eot_id|>",
                   source="meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json"),
    "llama2": dict(format="llama2", template=LLAMA2, bos_token="<s>", eos_token="</s>",
                   default_system=None, assistant_end=" </s>",
                   source="meta-llama/Llama-2-7b-chat-hf tokenizer_config.json"),
    "mistral": dict(format="mistral", template=MISTRAL, bos_token="<s>", eos_token="</s>",
                    default_system=None, assistant_end="</s>",
                    source="mistralai/Mistral-7B-Instruct-v0.2 tokenizer_config.json"),
    "zephyr": dict(format="zephyr", template=ZEPHYR, bos_token="<s>", eos_token="</s>",
                   default_system=None, assistant_end="</s>",
                   source="HuggingFaceH4/zephyr-7b-beta tokenizer_config.json"),
    "qwen3": dict(format="qwen3", template=QWEN3, bos_token=None, eos_token="<|im_end|>",
                  default_system=None, assistant_end="<|im_end|>",
                  source="Qwen/Qwen3-8B tokenizer_config.json (trl/chat_templates/qwen3.jinja)",
                  variants=[["qwen3-nothink", {"enable_thinking": False}]]),
    "llama31": dict(format="llama31", template=LLAMA31, bos_token="<|begin_of_text|>",
                    eos_token="<|eot_id|>", default_system=None, assistant_end="<|eot_id|>",
                    source="meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json",
                    variants=[["llama31", {"date_string": "03 Dec 2026"}]]),
    "plain": dict(format="plain", template=PLAIN, bos_token=None, eos_token="</s>",
                  default_system=None, assistant_end="</s>",
                  source="plumb's own definition (model/chat.h)"),
}


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ("single_user", [m("user", "Hello!")]),
    ("multi_turn", [m("system", "You are a terse assistant."), m("user", "What is 2+2?"),
                    m("assistant", "4."), m("user", "And 3+3?")]),
    ("train_no_system", [m("user", "Hi"), m("assistant", "Hello, how can I help?"),
                         m("user", "Tell me a joke."), m("assistant", "Why did the chicken cross the road?")]),
    ("train_system", [m("system", "Be kind."), m("user", "Who are you?"),
                      m("assistant", "I am a model.")]),
    ("whitespace", [m("system", "  Be brief. \n"), m("user", "  Hello there \n\n"),
                    m("assistant", "\n Hi!  "), m("user", "\tbye ")]),
    ("unicode", [m("user", "Grüße, 世界! 🙂 naïve"), m("assistant", "Ça va — très bien ✓"),
                 m("user", "Ελληνικά; русский?")]),
    ("empty_content", [m("system", ""), m("user", ""), m("assistant", "")]),
    # Role orders the strict templates reject (or, for llama2, oddly accept).
    ("user_user", [m("user", "a"), m("user", "b")]),
    ("assistant_first", [m("assistant", "a"), m("user", "b")]),
    ("system_late", [m("user", "a"), m("system", "b")]),
    ("system_twice", [m("system", "a"), m("system", "b"), m("user", "c")]),
    # Reasoning in assistant turns (Qwen3 splits it off at "</think>").
    ("think_last", [m("user", "2+2?"), m("assistant", "<think>\nadd them\n</think>\n\n4")]),
    ("think_history", [m("user", "a?"), m("assistant", "<think>r1</think>one"), m("user", "b?"),
                       m("assistant", "<think>\n\nr2\n\n</think>\n\ntwo")]),
    ("think_two_after_query", [m("user", "q"), m("assistant", "<think>r</think>x"),
                               m("assistant", "y")]),
    ("two_after_query", [m("user", "q"), m("assistant", "x"), m("assistant", "y")]),
    ("think_tool_response", [m("user", "q"), m("assistant", "<think>r</think>a"),
                             m("user", "<tool_response>42</tool_response>"), m("assistant", "b")]),
    ("think_nested", [m("user", "q"), m("assistant", "<think>a<think>b\n</think>c</think>\n\nd")]),
    ("think_unopened", [m("user", "q"), m("assistant", "reason</think>answer")]),
    ("think_no_reasoning", [m("system", "S"), m("user", "q"), m("assistant", "plain answer"),
                            m("user", "again")]),
]


def raise_exception(message):
    raise TemplateError(message)


def render_jinja(template, messages, add_generation_prompt, bos, eos, extra):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    kw = dict(messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    return env.from_string(template).render(**kw)


def render_transformers(template, messages, add_generation_prompt, bos, eos, extra):
    """transformers' own renderer (utils/chat_template_utils.py), when present."""
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        return None
    kw = dict(extra)
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    out, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                   add_generation_prompt=add_generation_prompt, **kw)
    return out[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/chat")
    args = ap.parse_args()
    cases = []
    n_cross = 0
    for tname, t in TEMPLATES.items():
        # a template's variants: another format name and the template
        # arguments it stands for (enable_thinking, date_string)
        for fmt, extra in [(t["format"], {})] + t.get("variants", []):
            for cname, msgs in CONVERSATIONS:
                for agp in (False, True):
                    case = dict(name=cname, template=tname, format=fmt, messages=msgs,
                                add_generation_prompt=agp)
                    if extra:
                        case["kwargs"] = extra
                    try:
                        case["text"] = render_jinja(t["template"], msgs, agp, t["bos_token"],
                                                    t["eos_token"], extra)
                    except TemplateError as e:
                        case["error"] = str(e)
                    if "text" in case:
                        other = render_transformers(t["template"], msgs, agp, t["bos_token"],
                                                    t["eos_token"], extra)
                        if other is not None:
                            n_cross += 1
                            if other != case["text"]:
                                sys.exit(f"{tname}/{cname}: jinja2 and transformers disagree:\n"
                                         f"{case['text']!r}\n{other!r}")
                    cases.append(case)
    os.makedirs(args.out, exist_ok=True)
    import transformers
    doc = dict(
        generator="tests/ref/make_chat_ref.py",
        versions=dict(jinja2=jinja2.__version__, transformers=transformers.__version__,
                      python=sys.version.split()[0]),
        templates=TEMPLATES,
        cases=cases,
    )
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases ({n_cross} cross-checked with transformers) to {args.out}")


if __name__ == "__main__":
    main()
