/* rope.h: RoPE's frequencies for a model, with the scalings of Llama 3.1
 * and later (llama3), linear interpolation and YaRN (Qwen2.5's long
 * contexts), computed as transformers computes them (modeling_rope_utils:
 * fp32 tables from the same expressions, in the same order). */
#ifndef PLUMB_ROPE_H
#define PLUMB_ROPE_H

#include "model/config.h"

/* Fills inv_freq (c->head_dim / 2) and *scale, the factor on cos and sin
 * (YaRN's attention factor; 1 otherwise). */
void rope_init(const ModelConfig *c, float *inv_freq, float *scale);

#endif
