/* fuzz_safetensors.c: st_open on an arbitrary file (the u64 header length,
 * the JSON header and the data), then, for each tensor it accepts,
 * st_find by name, st_read_f32 and st_copy_f32. st_open promises to
 * validate every offset, shape and dtype before the data is touched, so
 * ASan must see no read outside the mapping. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "fuzz/fuzz_util.h"
#include "model/safetensors.h"

FUZZ_INIT_DIR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "model.safetensors", data, size);
    StFile f;
    if (st_open(&f, path) != 0) {
        pl_clear_error();
        return 0;
    }
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.t[i];
        if (t->end < t->begin || f.data_start + t->end > f.size) abort();
        if (st_find(&f, t->name) == NULL) abort();
        (void)st_dtype_name(t->dtype);
        float *p = NULL;
        int copied = 0;
        if (st_read_f32(&f, t, &p, &copied) == 0) {
            volatile float sum = 0;
            for (size_t k = 0; k < t->numel; k++) sum += p[k];
            (void)sum;
            if (copied) free(p);
        }
        if (t->numel <= (1u << 20)) {
            float *dst = malloc(sizeof(float) * (t->numel ? t->numel : 1));
            (void)st_copy_f32(&f, t, dst);
            free(dst);
        }
        pl_clear_error();
    }
    (void)st_find(&f, "");
    st_close(&f);
    return 0;
}
