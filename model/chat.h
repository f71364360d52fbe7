/* chat.h: chat templates, by name instead of by Jinja.
 *
 * A C program cannot run the Jinja chat_template of a tokenizer_config.json,
 * so plumb implements the common formats by name and recognises which one a
 * template is from its markers. Each renderer reproduces, byte for byte, the
 * text that transformers' apply_chat_template(..., tokenize=False) gives with
 * the real template of the model named below (tests/data/chat/expected.json,
 * made by tests/ref/make_chat_ref.py, is the proof).
 *
 *   chatml   Qwen2-7B-Instruct, OpenHermes-2.5:
 *              [<|im_start|>system\n{default_system}<|im_end|>\n   (only when
 *               default_system is set and messages[0] is not a system message)]
 *              <|im_start|>{role}\n{content}<|im_end|>\n  per message
 *              generation prompt: <|im_start|>assistant\n
 *   llama3   Meta-Llama-3-8B-Instruct:
 *              {bos}<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|> ...
 *              generation prompt: <|start_header_id|>assistant<|end_header_id|>\n\n
 *   qwen3    Qwen3 (Qwen3-0.6B ... Qwen3-32B, the hybrid thinking models), as
 *            rendered without tools: chatml without a default system prompt,
 *            except for assistant turns. An assistant turn's content is split
 *            as the template does: its reasoning is the text before the first
 *            "</think>" (after the last "<think>" there, newlines trimmed), its
 *            answer the text after the last "</think>" (leading newlines
 *            trimmed). A turn after the last user query (one not wrapped in
 *            <tool_response>...</tool_response>) is written with its reasoning,
 *              <|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>\n
 *            when it is the last message or has reasoning; every other turn
 *            drops the reasoning: <|im_start|>assistant\n{answer}<|im_end|>\n.
 *              generation prompt: <|im_start|>assistant\n   (enable_thinking
 *              left at its default: the model may think)
 *   qwen3-nothink  the same with enable_thinking=False: the generation prompt
 *              is <|im_start|>assistant\n<think>\n\n</think>\n\n
 *   llama31  Llama-3.1-8B-Instruct (and 70B, 405B), without tools:
 *              {bos}<|start_header_id|>system<|end_header_id|>\n\n
 *              Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n
 *              {trim(system) or ""}<|eot_id|>   (always, system message or not)
 *            then the other messages as llama3 writes them. {date} is
 *            opts->date, by default the template's own "26 Jul 2024" (Llama
 *            3.2's template prints today's date instead: pass it as date).
 *   llama2   Llama-2-7b-chat-hf: an optional leading system message is folded
 *            into the first user turn as "<<SYS>>\n{system}\n<</SYS>>\n\n";
 *              user:      {bos}[INST] {content.strip()} [/INST]
 *              assistant: ' ' {content.strip()} ' ' {eos}
 *            (the strip of the first turn applies to the whole folded text).
 *            After the system message, roles must alternate user/assistant
 *            starting with user, else PL_EINVAL (the template raises). A later
 *            system message in an assistant position renders nothing (the
 *            template accepts it and drops it). No generation prompt exists:
 *            the text already ends with "[/INST]".
 *   mistral  Mistral-7B-Instruct-v0.2 (mistralai's "v1" template):
 *              {bos} then user: " [INST] " [{system}\n\n  on the first turn]
 *              {content} " [/INST]"; assistant: ' ' {content} {eos}.
 *            Content is not stripped. Same alternation rule as llama2; a
 *            system message anywhere but first is PL_EINVAL (the template
 *            raises). No generation prompt.
 *   zephyr   zephyr-7b-beta:
 *              <|{role}|>\n{content}{eos}\n  per message
 *              generation prompt: <|assistant|>\n
 *   plain    plumb's own, for base models with no template:
 *              {role}: {content}\n\n  per message, except assistant turns,
 *              which end {content}{eos}\n\n (eos omitted when unset);
 *              generation prompt: "assistant: ".
 *
 * "strip"/"trim" remove leading and trailing whitespace as Python's
 * str.strip() does (ASCII whitespace, \x1c-\x1f and the Unicode White_Space
 * characters encoded in UTF-8).
 *
 * Spans (chat_render_spans): for each message, the byte range [start, end)
 * of the output that holds its content as rendered (after any strip) and,
 * for assistant messages only, the terminator that ends the turn:
 *   chatml  content + "<|im_end|>"       (the "\n" after it is not included)
 *   qwen3   everything after "<|im_start|>assistant\n" up to and with
 *           "<|im_end|>": the think block when written, the answer, the end
 *   llama31 as llama3 (a system message's span is its trimmed content)
 *   llama3  trim(content) + "<|eot_id|>"
 *   llama2  strip(content) + " " + eos   (the space before is the prompt's)
 *   mistral content + eos                (the space before is the prompt's)
 *   zephyr  content + eos                ("\n" after it not included)
 *   plain   content + eos
 * so that a loss mask over the assistant spans trains exactly the tokens a
 * model must generate after the generation prompt, including the stop marker.
 * System and user spans cover the content only; a message that renders
 * nothing (a late llama2 system message) has start == end.
 *
 * Roles must be "system", "user" or "assistant"; anything else is PL_EINVAL
 * naming the message index. An empty conversation (n == 0) is PL_EINVAL. */
#ifndef PLUMB_CHAT_H
#define PLUMB_CHAT_H

#include <stddef.h>

typedef enum {
    CHAT_CHATML,
    CHAT_LLAMA3,
    CHAT_LLAMA2,
    CHAT_MISTRAL,
    CHAT_ZEPHYR,
    CHAT_PLAIN,
    CHAT_QWEN3,
    CHAT_QWEN3_NOTHINK,
    CHAT_LLAMA31,
    CHAT_NFORMATS
} ChatFormat;

typedef struct {
    const char *role;     // "system" | "user" | "assistant"
    const char *content;  // UTF-8, NUL-terminated
} ChatMessage;

/* Strings a format needs besides the messages. NULL means "" (bos/eos) or
 * none (default_system). Options filled by chat_detect or
 * chat_from_tokenizer_config own malloc'ed copies: release them with
 * chat_options_free. Options a caller fills itself may point anywhere. */
typedef struct {
    const char *bos;             // bos_token of the tokenizer ("<s>", ...)
    const char *eos;             // eos_token ("</s>", "<|im_end|>", ...)
    const char *default_system;  // chatml: system prompt used when messages[0] is not system
    const char *date;            // llama31: its "Today Date" (NULL: CHAT_LLAMA31_DATE); not
                                 // filled or freed by the functions below
} ChatOptions;

/* The date Llama 3.1's template writes when it is given none. */
#define CHAT_LLAMA31_DATE "26 Jul 2024"

typedef struct {
    size_t start, end;  // byte range [start, end) in the rendered text
} ChatSpan;

/* ------------------------------------------------------------ names */

/* "chatml", "qwen3", "qwen3-nothink", "llama3", "llama31", "llama2",
 * "mistral", "zephyr", "plain" -> *out.
 * PL_EINVAL (listing the names) for anything else. */
int chat_format_parse(const char *name, ChatFormat *out);

/* The name chat_format_parse accepts ("?" for an invalid value). */
const char *chat_format_name(ChatFormat f);

/* ----------------------------------------------------------- render */

/* Renders msgs (n) in format f into a malloc'ed NUL-terminated string *out,
 * appending the format's generation prompt when add_generation_prompt is
 * non-zero. opts may be NULL. On error returns PL_EINVAL (bad role, role
 * order the real template rejects, n == 0) or PL_ENOMEM, with *out NULL. */
int chat_render(ChatFormat f, const ChatOptions *opts, const ChatMessage *msgs, size_t n,
                int add_generation_prompt, char **out);

/* chat_render that also writes *out_len (may be NULL) and spans[i] for each
 * message i (spans has n entries; see the header comment for what a span
 * covers). */
int chat_render_spans(ChatFormat f, const ChatOptions *opts, const ChatMessage *msgs, size_t n,
                      int add_generation_prompt, char **out, size_t *out_len, ChatSpan *spans);

/* ------------------------------------------------------ recognition */

/* Recognises a Jinja chat_template by its markers, first match wins:
 *   <|im_start|> and </think>         -> qwen3 (thinking left at its default)
 *   <|im_start|>                      -> chatml (and, when the template writes
 *        a literal '<|im_start|>system\n...<|im_end|>', that text becomes
 *        opts->default_system, as in Qwen2's "You are a helpful assistant.")
 *   <|start_header_id|> and "Cutting Knowledge Date"  -> llama31
 *   <|start_header_id|>               -> llama3
 *   [INST] and <<SYS>>                -> llama2
 *   [INST]                            -> mistral
 *   <|user|> and <|assistant|>, no <|end|> (Phi-3) -> zephyr
 * opts may be NULL; otherwise only opts->default_system is set (malloc'ed,
 * or NULL). PL_ENOTSUP when nothing matches. */
int chat_detect(const char *chat_template, ChatFormat *out, ChatOptions *opts);

/* Reads tokenizer_config.json at path: chat_template (a string, or a list of
 * {"name", "template"} from which "default" is taken), bos_token and
 * eos_token (strings or {"content": ...} objects). override_name, when not
 * NULL, names the format and wins over detection (the default system prompt
 * is still taken from the template when it is of that format). Fills *fmt and
 * *opts (malloc'ed strings; chat_options_free). Fails with PL_ENOTSUP and
 * "<path>: chat_template not recognised; name the format (chatml, qwen3,
 * ...)" when the template is missing or unknown
 * and no override is given; PL_EIO / PL_EFORMAT for unreadable files. */
int chat_from_tokenizer_config(const char *path, const char *override_name, ChatFormat *fmt,
                               ChatOptions *opts);

/* Frees the strings of options filled by chat_detect or
 * chat_from_tokenizer_config and sets them to NULL. */
void chat_options_free(ChatOptions *opts);

#endif
