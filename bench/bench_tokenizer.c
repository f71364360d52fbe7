/* bench_tokenizer: encode throughput (MB/s of UTF-8 input) of tok_encode on
 * a large mixed text built in memory (seeded): English-like prose, code,
 * numbers, CJK, accented Latin, emoji.
 *
 *   build/bench_tokenizer [--tokenizer DIR] [--mb N] [--repeat R] [--dump FILE]
 *
 * Reports one call over the whole text (1 thread), decoding it back (which
 * must give the text), and the text cut into lines encoded by all OpenMP
 * threads. --dump writes the text, so other
 * tokenizers (tests/ref, HF tokenizers) can be timed on the same bytes. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "model/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned rnd(unsigned n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static const char *WORDS[] = {
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "I",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "training",
    "gradient",
    "tokenizer",
    "language",
    "probability",
    "distribution",
    "reinforcement",
    "learning",
    "policy",
    "reward",
    "sequence",
    "attention",
    "transformer",
    "don't",
    "it's",
    "we'll",
    "they're",
    "Paris",
    "London",
    "Hugging",
    "Face",
    "naïve",
    "café",
    "façade",
    "Zürich",
    "São",
    "Paulo",
    "résumé",
};
static const char *EXOTIC[] = {
    "日本語のテキスト",
    "中文字符和标点，",
    "한국어 텍스트",
    "Ελληνικά",
    "русский язык",
    "العربية",
    "हिन्दी",
    "🙂",
    "👍🏽",
    "🇫🇷",
    "e\xCC\x81",
    "ꙮ",
    "𝔘𝔫𝔦",
};
static const char *CODE[] = {
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; i++) { s += a[i] * b[i]; }\n",
    "#include <stdio.h>\n",
    "    if err != nil {\n        return nil, err\n    }\n",
    "SELECT id, name FROM users WHERE age > 30;\n",
};

static char *make_text(size_t target, size_t *len) {
    char *s = malloc(target + 256);
    size_t n = 0;
    while (n < target) {
        unsigned k = rnd(100);
        const char *w;
        char num[32];
        if (k < 80)
            w = WORDS[rnd(sizeof WORDS / sizeof *WORDS)];
        else if (k < 86) {
            snprintf(num, sizeof num, "%u", rnd(100000));
            w = num;
        } else if (k < 92)
            w = EXOTIC[rnd(sizeof EXOTIC / sizeof *EXOTIC)];
        else if (k < 94)
            w = CODE[rnd(sizeof CODE / sizeof *CODE)];
        else if (k < 97)
            w = k == 94 ? "," : k == 95 ? "." : "\n";
        else
            w = rnd(2) ? "  " : "(see: https://example.com/a?b=1)";
        size_t l = strlen(w);
        memcpy(s + n, w, l);
        n += l;
        s[n++] = ' ';
    }
    s[n] = 0;
    *len = n;
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *dir = "tests/data/tok/gpt2", *dump = NULL;
    int mb = 20, repeat = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokenizer"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--mb"))
            mb = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat"))
            repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dump"))
            dump = argv[i + 1];
        else {
            fprintf(stderr, "bench_tokenizer: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (repeat < 1 || repeat > 100) repeat = 3;
    Tokenizer *t;
    double t0 = now();
    if (tok_load(&t, dir) < 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", pl_error());
        return 1;
    }
    double t_load = now() - t0;
    size_t len;
    char *text = make_text((size_t)mb << 20, &len);
    if (dump) {
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(text, 1, len, f) != len) {
            perror(dump);
            return 1;
        }
        fclose(f);
    }
    printf("tokenizer %s (load %.3f s), text %.1f MB\n", dir, t_load, len / 1e6);

    double best[2][100], dec[100];
    int ntok = 0;
    /* lines, for the threaded run */
    int nl = 0;
    for (size_t i = 0; i < len; i++)
        nl += text[i] == '\n';
    size_t *ls = malloc(sizeof(size_t) * (nl + 2));
    int m = 0;
    ls[m++] = 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n') ls[m++] = i + 1;
    if (ls[m - 1] != len) ls[m++] = len;
    long long total_tok = 0;
    for (int r = 0; r < repeat; r++) {
        int *ids, n;
        t0 = now();
        if (tok_encode(t, text, len, 0, &ids, &n) < 0) {
            fprintf(stderr, "bench_tokenizer: %s\n", pl_error());
            return 1;
        }
        best[0][r] = now() - t0;
        ntok = n;
        char *back;
        t0 = now();
        if (tok_decode(t, ids, n, 0, &back) < 0 || strcmp(back, text)) {
            fprintf(stderr, "bench_tokenizer: decode does not give the text back\n");
            return 1;
        }
        dec[r] = now() - t0;
        free(back);
        free(ids);
        total_tok = 0;
        t0 = now();
#pragma omp parallel for schedule(dynamic, 64) reduction(+ : total_tok)
        for (int i = 0; i < m - 1; i++) {
            int *v, k;
            if (tok_encode(t, text + ls[i], ls[i + 1] - ls[i], 0, &v, &k) == 0) {
                total_tok += k;
                free(v);
            }
        }
        best[1][r] = now() - t0;
    }
    qsort(best[0], repeat, sizeof(double), cmp_double);
    qsort(best[1], repeat, sizeof(double), cmp_double);
    qsort(dec, repeat, sizeof(double), cmp_double);
    double s1 = best[0][repeat / 2], s2 = best[1][repeat / 2];
    printf("one call, 1 thread : %8.2f MB/s  %6.2f M tokens/s  (%d tokens, %.1f bytes/token, "
           "median of %d)\n",
           len / 1e6 / s1, ntok / 1e6 / s1, ntok, (double)len / ntok, repeat);
    printf("decode, 1 thread    : %8.2f MB/s (round trip exact)\n", len / 1e6 / dec[repeat / 2]);
    printf("%d lines, %d threads: %8.2f MB/s  %6.2f M tokens/s  (%lld tokens)\n", m - 1,
           omp_get_max_threads(), len / 1e6 / s2, total_tok / 1e6 / s2, total_tok);
    free(ls);
    free(text);
    tok_free(&t);
    return 0;
}
