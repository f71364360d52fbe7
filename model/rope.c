/* rope.c: RoPE's frequencies, plain and scaled (rope.h).
 *
 * Each table follows transformers' modeling_rope_utils step by step in
 * fp32 (a python float meeting an fp32 tensor is rounded to fp32 first),
 * so that a model's angles are transformers' to the last bit or two. */
#include "model/rope.h"

#include <math.h>

#include "kernels/kernels.h"

#define TWO_PI 6.283185307179586

/* Llama 3.1: frequencies with wavelengths longer than the original context
 * / low_freq_factor are divided by factor, shorter than context /
 * high_freq_factor kept, and those between blended smoothly. */
static void llama3(const RopeScaling *r, float *f, int half) {
    const float factor = r->factor, lo = r->low_freq_factor, hi = r->high_freq_factor;
    const double old = r->original_max_pos;
    const float lo_wavelen = (float)(old / lo), hi_wavelen = (float)(old / hi);
    const float span = (float)((double)hi - (double)lo);
    for (int j = 0; j < half; j++) {
        float wavelen = (float)TWO_PI / f[j];
        float scaled = wavelen > lo_wavelen ? f[j] / factor : f[j];
        float smooth = ((float)old / wavelen - lo) / span;
        float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
        int medium = !(wavelen < hi_wavelen) && !(wavelen > lo_wavelen);
        f[j] = medium ? smoothed : scaled;
    }
}

static double yarn_mscale(double scale, double m) {
    return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

/* The dimension whose wavelength turns num_rot times in max_pos positions. */
static double correction_dim(double num_rot, int dim, double base, double max_pos) {
    return (dim * log(max_pos / (num_rot * TWO_PI))) / (2 * log(base));
}

/* YaRN: interpolated (divided by factor) below the correction range,
 * extrapolated (kept) above it, a linear ramp between; cos and sin scaled
 * by the attention factor. */
static void yarn(const ModelConfig *c, const RopeScaling *r, float *f, int half, float *scale) {
    const int dim = c->head_dim;
    const double base = c->rope_theta, factor = r->factor;
    double af = r->attention_factor;
    if (af <= 0)
        af = r->mscale > 0 && r->mscale_all_dim > 0
                 ? yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim)
                 : yarn_mscale(factor, 1.0);
    *scale = (float)af;
    double beta_fast = r->beta_fast > 0 ? r->beta_fast : 32, beta_slow = r->beta_slow > 0 ? r->beta_slow : 1;
    double low = correction_dim(beta_fast, dim, base, r->original_max_pos);
    double high = correction_dim(beta_slow, dim, base, r->original_max_pos);
    if (r->truncate) low = floor(low), high = ceil(high);
    if (low < 0) low = 0;
    if (high > dim - 1) high = dim - 1;
    if (low == high) high += 0.001; /* as transformers: no division by zero */
    const float lo = (float)low, den = (float)(high - low), fac = (float)factor;
    for (int j = 0; j < half; j++) {
        float pos_freq = powf((float)base, (float)(2 * j) / (float)dim);
        float extrap = 1.0f / pos_freq, interp = 1.0f / (fac * pos_freq);
        float ramp = ((float)j - lo) / den;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float ef = 1.0f - ramp; /* the extrapolated share */
        f[j] = interp * (1.0f - ef) + extrap * ef;
    }
}

void rope_init(const ModelConfig *c, float *inv_freq, float *scale) {
    const int half = c->head_dim / 2;
    *scale = 1.0f;
    rope_freq_plain(inv_freq, c->head_dim, c->rope_theta);
    switch (c->rope.type) {
    case ROPE_LINEAR:
        for (int j = 0; j < half; j++) inv_freq[j] /= c->rope.factor;
        break;
    case ROPE_LLAMA3:
        llama3(&c->rope, inv_freq, half);
        break;
    case ROPE_YARN:
        yarn(c, &c->rope, inv_freq, half, scale);
        break;
    default:
        break;
    }
}
