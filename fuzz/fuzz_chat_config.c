/* fuzz_chat_config.c: chat_from_tokenizer_config on arbitrary
 * tokenizer_config.json, then chat_render_spans of a fixed conversation
 * with the format and options it found, and chat_detect on the raw input
 * as a template string.
 *
 * Input: tokenizer_config.json [NUL format name for override_name]. The
 * spans of a successful render must lie inside the rendered text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "fuzz/fuzz_util.h"
#include "model/chat.h"

static const ChatMessage MSGS[] = {
    {"system", "  Be brief.\n"},
    {"user", "Hi <|im_end|> [INST]"},
    {"assistant", " Hello! \xe2\x80\x83"},
    {"user", "\t"},
};
#define NMSGS (sizeof MSGS / sizeof MSGS[0])

static void render_all(ChatFormat f, const ChatOptions *o) {
    for (size_t skip = 0; skip < 2; skip++) {
        const ChatMessage *m = MSGS + skip; /* with and without a system message */
        size_t n = NMSGS - skip;
        for (int gen = 0; gen < 2; gen++) {
            char *out = NULL;
            size_t len = 0;
            ChatSpan spans[NMSGS];
            if (chat_render_spans(f, o, m, n, gen, &out, &len, spans) != 0) {
                if (out) abort(); /* *out is NULL on error */
                pl_clear_error();
                continue;
            }
            if (strlen(out) != len) abort();
            for (size_t i = 0; i < n; i++)
                if (spans[i].start > spans[i].end || spans[i].end > len) {
                    fprintf(stderr, "span %zu [%zu, %zu) outside %zu bytes\n", i,
                            spans[i].start, spans[i].end, len);
                    abort();
                }
            free(out);
        }
    }
}

FUZZ_INIT_DIR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *cfg, *name;
    size_t ncfg, nname;
    fuzz_split(data, size, &cfg, &ncfg, &name, &nname);
    const char *path = fuzz_write(0, "tokenizer_config.json", cfg, ncfg);

    char override[32];
    const char *ov = NULL;
    if (name) {
        size_t k = nname < sizeof override - 1 ? nname : sizeof override - 1;
        memcpy(override, name, k);
        override[k] = 0;
        ov = override;
    }
    ChatFormat fmt;
    ChatOptions opts;
    if (chat_from_tokenizer_config(path, ov, &fmt, &opts) == 0) {
        if ((int)fmt < 0 || fmt >= CHAT_NFORMATS) abort();
        render_all(fmt, &opts);
        chat_options_free(&opts);
        if (opts.bos || opts.eos || opts.default_system) abort();
    } else {
        chat_options_free(&opts);
    }
    pl_clear_error();

    /* The same bytes as a template string (a C string: up to the first NUL). */
    char *tpl = malloc(ncfg + 1);
    memcpy(tpl, cfg, ncfg);
    tpl[ncfg] = 0;
    ChatOptions dopts = {0};
    if (chat_detect(tpl, &fmt, &dopts) == 0) {
        render_all(fmt, &dopts);
        chat_options_free(&dopts);
    }
    pl_clear_error();
    free(tpl);
    return 0;
}
