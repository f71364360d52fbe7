/* Per-thread scratch buffers (scratch.h). The pointers sit in thread-local
 * storage, so that leak checkers see them while the thread lives, and a
 * pthread key frees them when it ends (OpenMP's pool threads end with the
 * process; a role's thread may end sooner). */
#include "kernels/cpu/scratch.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    float *buf[SCRATCH_SLOTS];
    size_t cap[SCRATCH_SLOTS];
} Scratch;

static _Thread_local Scratch tls;
static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void release(void *p) {
    Scratch *s = p;
    for (int i = 0; i < SCRATCH_SLOTS; i++) {
        free(s->buf[i]);
        s->buf[i] = NULL;
        s->cap[i] = 0;
    }
}

static void make_key(void) {
    if (pthread_key_create(&key, release)) abort();
}

float *cpu_scratch(int slot, size_t n) {
    Scratch *s = &tls;
    if (n <= s->cap[slot]) return s->buf[slot];
    pthread_once(&once, make_key);
    if (pthread_getspecific(key) != s && pthread_setspecific(key, s)) abort();
    free(s->buf[slot]);
    s->buf[slot] = malloc(sizeof(float) * (n ? n : 1));
    if (!s->buf[slot]) abort();
    s->cap[slot] = n;
    return s->buf[slot];
}
