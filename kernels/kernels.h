/* kernels.h: the math on tensors, one API for every backend.
 *
 * Dimension letters used throughout:
 *   N  tokens in a packed batch (all sequences concatenated)
 *   B  sequences in the batch
 *   C  channels (hidden size)       H  MLP hidden size
 *   NH query heads, NKV key/value heads (NH % NKV == 0), HS head size
 *   V  vocabulary size              IC/OC  in/out features of a linear
 *
 * Layout conventions:
 *   - every tensor is row-major fp32 (the CUDA twins are fp32 too for now);
 *   - a linear weight is (OC, IC), as Hugging Face stores it, so a linear
 *     computes out = inp @ w^T + bias;
 *   - a packed batch is described by cu_seqlens (B+1): sequence b owns the
 *     rows [cu_seqlens[b], cu_seqlens[b+1]); attention never crosses it.
 *
 * Backward kernels ACCUMULATE into weight gradients (+=) so that gradient
 * accumulation over micro-batches is free, and into input gradients where
 * the comment says so. A NULL gradient pointer means "not needed".
 *
 * The CPU implementations live in kernels/cpu/ and the CUDA twins, with
 * identical signatures over device pointers, in kernels/cuda/. */
#ifndef PLUMB_KERNELS_H
#define PLUMB_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- linear */

/* out (N,OC) = inp (N,IC) @ w^T (OC,IC) + bias (OC, may be NULL).
 * With accumulate != 0 the product is added to out instead. Each output is
 * summed in one order whatever N and the row's place: a row gives the same
 * bits alone as in any batch (generation and training agree). */
void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int N, int IC, int OC, int accumulate);

/* Weights laid out for products of few rows (decoding): wp holds w (OC,
 * IC) in blocks of 16 rows, each block column by column (wp[b][i][r] =
 * w[16 b + r][i], rows past OC zero), matmul_packed_floats(IC, OC) floats.
 * A few-row product then reads the weights as one stream, where w's
 * layout makes it 16. matmul_forward_packed is matmul_forward with wp
 * beside w, to the bit: from wp for N <= MATMUL_PACKED_ROWS, else from w.
 * (A backend without the layout leaves these NULL in its table.) */
#define MATMUL_PACKED_ROWS 8
size_t matmul_packed_floats(int IC, int OC);
void matmul_pack(float *wp, const float *w, int IC, int OC);
void matmul_forward_packed(float *out, const float *inp, const float *wp, const float *w,
                           const float *bias, int N, int IC, int OC, int accumulate);

/* dinp (N,IC) += dout (N,OC) @ w (OC,IC); dw (OC,IC) += dout^T @ inp;
 * dbias (OC) += column sums of dout. Any of dinp, dw, dbias may be NULL. */
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                     const float *inp, const float *w, int N, int IC, int OC);

/* --------------------------------------------------------------- rmsnorm */

/* out (N,C) = inp / rms(inp) * w; rstd (N) = 1/sqrt(mean(inp^2) + eps). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                     int N, int C, float eps);

/* dinp (N,C) += d/dinp; dw (C) += d/dw (dw may be NULL). */
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C);

/* ------------------------------------------------------------------ rope */

/* RoPE's frequencies: inv_freq[j], j < HS/2, and a factor on cos and sin
 * (YaRN's attention factor; 1 for the others). inv_freq is host memory on
 * every backend (a kernel takes the table by value). */
typedef struct {
    const float *inv_freq;
    float scale;
} RopeFreq;

/* The unscaled frequencies theta^(-2j/HS) in fp32, as Hugging Face
 * computes them (scaled ones: model/rope.h). */
void rope_freq_plain(float *inv_freq, int HS, float theta);

/* Rotates x (N, NHX*HS) in place; row i sits at position pos[i], pair j
 * by the angle pos[i] * inv_freq[j] (and is scaled by f.scale).
 * interleaved = 0: Hugging Face half-rotation, pairs (j, j + HS/2).
 * interleaved = 1: llama2.c / Meta, pairs (2j, 2j + 1). */
void rope_forward(float *x, const int *pos, int N, int NHX, int HS, RopeFreq f, int interleaved);

/* dx in place: the transpose of rope_forward (its inverse when scale = 1). */
void rope_backward(float *dx, const int *pos, int N, int NHX, int HS, RopeFreq f,
                   int interleaved);

/* ---------------------------------------------------------------- swiglu */

/* out (n) = silu(gate) * up, silu(g) = g * sigmoid(g). */
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);

/* dgate, dup (n) = gradients (overwritten, not accumulated). */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);

/* ------------------------------------------------------------- attention */

/* Causal grouped-query attention over a packed batch.
 * q (N, NH*HS), k v (N, NKV*HS), out (N, NH*HS), lse (N, NH): the log-sum-exp
 * of each query's scaled scores, kept so that backward can recompute the
 * probabilities instead of storing (T x T) per head. Scale 1/sqrt(HS). */
void attention_forward(float *out, float *lse, const float *q, const float *k,
                       const float *v, const int *cu_seqlens, int B, int NH, int NKV,
                       int HS);

/* dq (N, NH*HS), dk dv (N, NKV*HS): overwritten. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *out, const float *lse, const float *q,
                        const float *k, const float *v, const int *cu_seqlens, int B,
                        int NH, int NKV, int HS);

/* One new query per sequence against its KV cache (decode step): each row
 * computed as attention_forward computes the same query, bit for bit.
 * q, out (B, NH*HS); kc, vc (S, maxT, NKV*HS) for S cache slots. Query row
 * b reads slot slots[b] (slots NULL: slot b), which holds lens[b] valid
 * positions, the last of which is the current token (lens[b] = 0 gives a
 * zero row). */
void attention_decode(float *out, const float *q, const float *kc, const float *vc,
                      const int *slots, const int *lens, int B, int NH, int NKV, int HS,
                      int maxT);

/* ---------------------------------------------------- log-probs, entropy */

/* Per row of logits (N,V) at temperature 1/inv_temp, z = logits * inv_temp:
 *   lse[i] = logsumexp(z_i), ent[i] = lse[i] - sum softmax(z_i) * z_i,
 *   lp[i]  = z_i[targets[i]] - lse[i]  (0 where targets[i] < 0).
 * One pass per row, no softmax is stored. ent may be NULL. */
void logprob_forward(float *lp, float *ent, float *lse, const float *logits,
                     const int *targets, int N, int V, float inv_temp);

/* One row of logprob_forward: z (V) logits, the log-prob of target (0
 * when target < 0), its lse and entropy (either may be NULL). The sampler
 * takes the log-prob of the token it drew from here too, so that
 * generation reports the bits the training forward computes. */
float logprob_row(const float *z, int V, int target, float inv_temp, float *lse, float *ent);

/* dlogits (N,V) = d(sum dlp*lp + dent*ent)/dlogits (overwritten).
 * Needs lse from forward, and ent whenever dent is given; dlp or dent may
 * be NULL (treated as 0). Masked logits (-inf) get a zero gradient. */
void logprob_backward(float *dlogits, const float *dlp, const float *dent,
                      const float *logits, const float *lse, const float *ent,
                      const int *targets, int N, int V, float inv_temp);

/* ------------------------------------------------------------- embedding */

/* out (N,C) = table[ids[i]] for each row. */
void embedding_forward(float *out, const int *ids, const float *table, int N, int C);

/* dtable (V,C) += dout rows scattered by ids. */
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);

#endif
