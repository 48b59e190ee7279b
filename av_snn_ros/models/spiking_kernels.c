/* Native CPU kernels for spiking-network inference (compiled on first use by native_kernels.py).
 *
 * av_spike_conv2d: an event-driven 2-D convolution. Spike maps are mostly zeros (0.4-22 % non-zero in
 *   MISNet-XS), so instead of a dense convolution each output pixel sums the weight rows of the few
 *   non-zero inputs in its neighbourhood: work proportional to the events, not to the channels.
 *   Exact up to the order of the float additions; any input values are allowed (the value scales its
 *   weight row), it is only fast when they are sparse. Stride 1, "same" zero padding, odd kernels.
 * av_lif_multistep / av_mlif_multistep: charge, fire and reset of every timestep in one pass over the
 *   membrane instead of three tensor passes per step. Bit-for-bit the values of the torch fast paths
 *   in neurons.py: the charge is one fused multiply-add like torch.add(d, v, alpha=decay).
 *
 * Layouts: activations are dense float32 in memory order. The convolution takes NHWC input (torch's
 * channels_last), weights as [KH][KW][Cin][Cout] and writes NHWC. The neurons see a (T, M) array.
 * Every kernel takes its thread count (the caller's torch.get_num_threads()).
 */
#include <math.h>
#include <stdint.h>

/* 16 floats; GCC/Clang lower it to AVX-512, 2 x AVX2 or 4 x NEON registers. aligned(4): rows of the
   weights and outputs are only float-aligned. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));

/* Per pixel, the non-zero input channels (idx) and their values (val), in fixed slots of Cin. */
static int64_t compress(const float *x, int64_t P, int C, int32_t *cnt, int32_t *idx, float *val,
                        int nthreads) {
    int64_t nnz = 0;
    #pragma omp parallel for reduction(+ : nnz) schedule(static) num_threads(nthreads)
    for (int64_t p = 0; p < P; ++p) {
        const float *xp = x + p * C;
        int32_t *ip = idx + p * C;
        float *vp = val + p * C;
        int k = 0;
        for (int c = 0; c < C; ++c) {
            /* branch-free: write every channel into slot k, keep it only if non-zero (at 5-20 %
               density the branch mispredicted often enough to double the pass); k <= c, so the
               write stays inside this pixel's C slots */
            float v = xp[c];
            ip[k] = c;
            vp[k] = v;
            k += v != 0.0f;
        }
        cnt[p] = k;
        nnz += k;
    }
    return nnz;
}

/* NV vectors of 16 output channels from cb on, for output pixel (n, ho, wo): the accumulators stay in
   registers over the whole neighbourhood (an array accumulator, as a plain loop over the channels
   compiles to, went through the stack on every event and ran ~4x slower). The event loop must not be
   vectorised: across events the weight-row loads would become gathers (GCC 14+ honours the pragma;
   older compilers ignore it and did not vectorise this loop in our builds). */
#define GATHER(NV)                                                                         \
    do {                                                                                   \
        v16 a[NV];                                                                         \
        for (int q = 0; q < NV; ++q) a[q] = *(const v16 *)(bias + cb + 16 * q);           \
        for (int kh = 0; kh < KH; ++kh) {                                                  \
            int hi = ho + kh - ph;                                                         \
            if (hi < 0 || hi >= H) continue;                                               \
            for (int kw = 0; kw < KW; ++kw) {                                              \
                int wi = wo + kw - pw;                                                     \
                if (wi < 0 || wi >= W) continue;                                           \
                int64_t p = ((int64_t)n * H + hi) * W + wi;                                \
                const int32_t *ip = idx + p * Cin;                                         \
                const float *vp = val + p * Cin;                                           \
                const float *wtap = wt + (int64_t)(kh * KW + kw) * Cin * Cout + cb;        \
                int c = cnt[p];                                                            \
                _Pragma("GCC novector")                                                    \
                for (int j = 0; j < c; ++j) {                                              \
                    const v16 *wr = (const v16 *)(wtap + (int64_t)ip[j] * Cout);           \
                    float v = vp[j];                                                       \
                    for (int q = 0; q < NV; ++q) a[q] += v * wr[q];                        \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int q = 0; q < NV; ++q) *(v16 *)(o + cb + 16 * q) = a[q];                     \
    } while (0)

/* Returns the number of non-zero inputs, or -1 (output untouched) when they are more than
   max_density of all inputs: a dense convolution is then faster. cnt: N*H*W, idx/val: N*H*W*Cin. */
int64_t av_spike_conv2d(const float *x, int N, int H, int W, int Cin, const float *wt,
                        const float *bias, int Cout, int KH, int KW, float *out, int32_t *cnt,
                        int32_t *idx, float *val, double max_density, int nthreads) {
    int64_t P = (int64_t)N * H * W;
    int64_t nnz = compress(x, P, Cin, cnt, idx, val, nthreads);
    if ((double)nnz > max_density * (double)P * (double)Cin) return -1;
    int ph = KH / 2, pw = KW / 2;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < (int64_t)N * H; ++r) {
        int n = (int)(r / H), ho = (int)(r % H);
        for (int wo = 0; wo < W; ++wo) {
            float *o = out + (((int64_t)n * H + ho) * W + wo) * Cout;
            int cb = 0;
            for (; cb + 64 <= Cout; cb += 64) GATHER(4);
            for (; cb + 16 <= Cout; cb += 16) GATHER(1);
            for (; cb < Cout; ++cb) {          /* channels past the last multiple of 16 */
                float acc = bias[cb];
                for (int kh = 0; kh < KH; ++kh) {
                    int hi = ho + kh - ph;
                    if (hi < 0 || hi >= H) continue;
                    for (int kw = 0; kw < KW; ++kw) {
                        int wi = wo + kw - pw;
                        if (wi < 0 || wi >= W) continue;
                        int64_t p = ((int64_t)n * H + hi) * W + wi;
                        const float *wtap = wt + (int64_t)(kh * KW + kw) * Cin * Cout + cb;
                        for (int j = 0; j < cnt[p]; ++j)
                            acc += val[p * Cin + j] * wtap[(int64_t)idx[p * Cin + j] * Cout];
                    }
                }
                o[cb] = acc;
            }
        }
    }
    return nnz;
}

#define CHUNK 1024   /* membranes per block: stay in L1 across the T steps */

/* LIF from a zero membrane: U = fma(decay, U, D[t]); S = U >= threshold; reset soft (U -= thr * S) or
   hard (U = reset where S). d, s: (T, M); v_final: M (the membrane after the last step). */
void av_lif_multistep(const float *d, float *s, float *v_final, int64_t T, int64_t M, float decay,
                      float threshold, int hard_reset, float reset, int nthreads) {
    int64_t blocks = (M + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t lo = b * CHUNK, len = M - lo < CHUNK ? M - lo : CHUNK;
        float u[CHUNK];
        for (int64_t i = 0; i < len; ++i) u[i] = 0.0f;
        for (int64_t t = 0; t < T; ++t) {
            const float *dt = d + t * M + lo;
            float *st = s + t * M + lo;
            for (int64_t i = 0; i < len; ++i) {
                float v = t == 0 ? dt[i] : fmaf(decay, u[i], dt[i]);
                float spike = v >= threshold ? 1.0f : 0.0f;
                st[i] = spike;
                u[i] = hard_reset ? (spike != 0.0f ? reset : v) : v - threshold * spike;
            }
        }
        for (int64_t i = 0; i < len; ++i) v_final[lo + i] = u[i];
    }
}

/* MISNet's multimodal LIF from zero membranes: U_m = fma(decay, U_m, C_m[t]);
   S_m = alpha_m * U_m >= threshold; U_m -= threshold * S_m (m = audio, visual; same shapes). */
void av_mlif_multistep(const float *ca, const float *cv, float *sa, float *sv, float *va_final,
                       float *vv_final, int64_t T, int64_t M, float decay, float alpha_a,
                       float alpha_v, float threshold, int nthreads) {
    int64_t blocks = (M + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t lo = b * CHUNK, len = M - lo < CHUNK ? M - lo : CHUNK;
        float ua[CHUNK], uv[CHUNK];
        for (int64_t i = 0; i < len; ++i) { ua[i] = 0.0f; uv[i] = 0.0f; }
        for (int64_t t = 0; t < T; ++t) {
            const float *cat = ca + t * M + lo, *cvt = cv + t * M + lo;
            float *sat = sa + t * M + lo, *svt = sv + t * M + lo;
            for (int64_t i = 0; i < len; ++i) {
                float a = t == 0 ? cat[i] : fmaf(decay, ua[i], cat[i]);
                float v = t == 0 ? cvt[i] : fmaf(decay, uv[i], cvt[i]);
                float spa = alpha_a * a >= threshold ? 1.0f : 0.0f;
                float spv = alpha_v * v >= threshold ? 1.0f : 0.0f;
                sat[i] = spa;
                svt[i] = spv;
                ua[i] = a - threshold * spa;
                uv[i] = v - threshold * spv;
            }
        }
        for (int64_t i = 0; i < len; ++i) { va_final[lo + i] = ua[i]; vv_final[lo + i] = uv[i]; }
    }
}
