/* fuzz_config.c: config_load_json on arbitrary config.json, the same bytes
 * as a generation_config.json, then config_validate and, when the shape is
 * valid, config_num_params and config_save_json (whose output must load
 * back to the same shape). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "fuzz/fuzz_util.h"
#include "model/config.h"

FUZZ_INIT_DIR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "config.json", data, size);
    ModelConfig c;
    config_defaults(&c);
    int rc = config_load_json(&c, path);
    ModelConfig g;
    config_defaults(&g);
    (void)config_load_generation(&g, path);
    pl_clear_error();
    if (rc != 0) return 0;
    if (c.n_eos < 0 || c.n_eos > CONFIG_MAX_EOS) abort();
    if (config_validate(&c) != 0) {
        pl_clear_error();
        return 0;
    }
    (void)config_num_params(&c);
    char out[4352];
    snprintf(out, sizeof out, "%s/saved.json", fuzz_dir());
    if (config_save_json(&c, out) != 0) {
        pl_clear_error();
        return 0;
    }
    ModelConfig back;
    config_defaults(&back);
    if (config_load_json(&back, out) != 0) {
        fprintf(stderr, "config_save_json wrote what config_load_json refuses: %s\n",
                pl_error());
        abort();
    }
    if (back.vocab_size != c.vocab_size || back.dim != c.dim || back.n_layers != c.n_layers ||
        back.n_heads != c.n_heads || back.n_kv_heads != c.n_kv_heads ||
        back.hidden_dim != c.hidden_dim) {
        fprintf(stderr, "config.json round trip changed the shape\n");
        abort();
    }
    return 0;
}
