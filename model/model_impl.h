/* model_impl.h: private to model.c and model_kv.c, what the batch forward
 * and the KV-cache decode share: a linear layer with its LoRA pair, on the
 * model's device. */
#ifndef PLUMB_MODEL_IMPL_H
#define PLUMB_MODEL_IMPL_H

#include "kernels/backend.h"
#include "model/model.h"

/* out (N,OC) (= or +=) x W^T + bias, read from the model's decode copy
 * of slot k (layer l's target t at l * LORA_NT + t, the LM head at
 * n_layers * LORA_NT: Model.packed) when it has one made from W. */
void model_matmul(const Model *m, int k, float *out, const float *x, const float *W,
                  const float *bias, int N, int IC, int OC, int accumulate);

/* out (N,OC) (= or +=) x W^T + bias + scale (x A^T) B^T, for layer l's
 * LoRA target t; u (N,R) keeps scale * x A^T for backward. */
void model_linear_forward(const Model *m, int l, int t, float *out, const float *x,
                          const float *W, const float *bias, float *u, int N, int IC, int OC,
                          int accumulate);

/* The parameters onto the device before it computes with them: the
 * optimizer, a checkpoint or a caller may have changed the host masters.
 * Nothing to do on host memory. */
void model_params_up(Model *m);

/* The last forward's keys and values, (L, N, KD) after RoPE, and its final
 * normed hidden states (N, C): device memory. */
const float *model_layer_k(const Model *m);
const float *model_layer_v(const Model *m);
const float *model_final_hidden(const Model *m);

#endif
