/* scratch.h: per-thread buffers the CPU kernels reuse from call to call.
 * Private to kernels/cpu/.
 *
 * A buffer allocated per call costs more than the product it serves: a
 * few MiB come from mmap, and every call then faults its pages in and the
 * kernel zeroes them (the 2048 x 288 panel of a q projection took as long
 * to fault in as to multiply). Each thread keeps one buffer per slot, grown
 * as needed and freed when the thread ends. */
#ifndef PLUMB_KERNELS_CPU_SCRATCH_H
#define PLUMB_KERNELS_CPU_SCRATCH_H

#include <stddef.h>

enum {
    SCRATCH_PANEL,   /* matmul_forward: the packed inputs */
    SCRATCH_SCORES,  /* attention: a row of scores */
    SCRATCH_PROBS,   /* attention backward: a tile of probabilities */
    SCRATCH_DPROBS,  /* attention backward: their gradient */
    SCRATCH_SLOTS
};

/* The calling thread's buffer for slot, at least n floats; its contents are
 * whatever the last call left. Aborts when memory runs out (the kernels
 * have no error path). */
float *cpu_scratch(int slot, size_t n);

#endif
