/* The CPU kernels of learned/fused_mlp_cpu.py: one MLPLOpt step of one [R, C] tensor in two
 * passes, compiled per configuration with
 *   -DSCALAR=float|double -DHID=<hidden> -DLAYERS=<layers> -DNIN=<17 or 18 inputs>.
 *
 * lo_moments: m_i <- m_i + (1 - b_i)(g - m_i), v <- v + (1 - b_v)(g^2 - v) in place (torch.lerp's
 *   formula for weights below 0.5), and the sums of squares over the tensor of the 15
 *   per-coordinate features and of Adam's direction (learned/features.py), in double.
 * lo_mlp_step: the features of a block of L coordinates, the MLP unit by unit with the block's
 *   lanes as the vector dimension (the compiler vectorises every innermost loop), and
 *   p <- p - direction * exp(exp_mult * magnitude) * mult.  The per-tensor normalisers are
 *   folded into the first layer's weights by the caller (w0[k][j] * norm_k).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef SCALAR T;
#define L 16     /* coordinates per block: two AVX2 registers of float */
#define NF 17    /* per-coordinate features (learned.features.FEATURES) */
#define NSUM 16  /* the 15 normalised coordinate features, then Adam's direction */

/* sc: rm, bc1, sqrt(bc2), mult, exp_mult, eps, w1, w2, w3, wv */
enum { RM, BC1, SBC2, MULT, EXPM, EPSI, W1, W2, W3, WV, NSC };

static inline T rsq(T x) { return (T)1 / (T)sqrt(x); }

/* exp(x) in a form the compiler vectorises (libm's exp is a scalar call): x = n ln2 + r with
 * n = round(x / ln2) (by adding and subtracting 1.5 * 2^mantissa bits), |r| <= ln2 / 2
 * (Cody-Waite: ln2 split in two), exp(r) by its Taylor series (degree 7 in float, 13 in
 * double: truncation below half an ulp), 2^n written into the exponent bits; x beyond the
 * finite range gives inf or 0, NaN stays NaN. Selections are bit masks, not branches (a
 * branch, even a ?: on floats, stops the vectoriser). Within 1 ulp of exp in float. */
#if SCALAR_IS_DOUBLE
typedef int64_t IT;
#define MANT 52
#define BIAS 1023
#define XMAX 709.0
#define XMIN -708.0
#define ROUNDER 6755399441055744.0
static const T LN2HI = 6.93147180369123816490e-01, LN2LO = 1.90821492927058770002e-10;
#else
typedef int32_t IT;
#define MANT 23
#define BIAS 127
#define XMAX 88.0f
#define XMIN -87.0f
#define ROUNDER 12582912.0f
static const T LN2HI = 0.693359375f, LN2LO = -2.12194440e-4f;
#endif
static inline IT bits_of(T x) { IT i; memcpy(&i, &x, sizeof i); return i; }
static inline T of_bits(IT i) { T x; memcpy(&x, &i, sizeof x); return x; }
static inline T pick(IT c, T a, T b) { /* a if c else b */
  const IT m = -c;
  return of_bits((bits_of(a) & m) | (bits_of(b) & ~m));
}
static inline T vexp(T x) {
  const IT hi = x > (T)XMAX, lo = x < (T)XMIN;
  const T xc = pick(hi, (T)XMAX, pick(lo, (T)XMIN, x));
  const T n = (xc * (T)1.44269504088896340736 + ROUNDER) - ROUNDER;
  const T r = (xc - n * LN2HI) - n * LN2LO;
  T e = 1;
#define H(k) e = 1 + e * r * (T)(1.0 / k);
#if SCALAR_IS_DOUBLE
  H(13) H(12) H(11) H(10) H(9) H(8)
#endif
  H(7) H(6) H(5) H(4) H(3) H(2) H(1)
#undef H
  const T y = e * of_bits(((IT)n + BIAS) << MANT);
  return pick(hi, (T)INFINITY, pick(lo, (T)0, y));
}

/* the moments of coordinates [c0, c0 + n) of row r, in place; their squared features added to
 * racc[k][lane] (lane = coordinate - c0) */
static inline void moments(int64_t n, const T* restrict g, const T* restrict p,
                           T* restrict m1, T* restrict m2, T* restrict m3, T* restrict v,
                           const T* restrict col, T rowr, const T* restrict sc,
                           T racc[restrict NSUM][L]) {
  const T eps = sc[EPSI], w1 = sc[W1], w2 = sc[W2], w3 = sc[W3], wv = sc[WV];
  const T bc1 = sc[BC1], sbc2 = sc[SBC2];
  for (int64_t l = 0; l < n; ++l) {
    const T gi = g[l], pi = p[l];
    const T a1 = m1[l] + w1 * (gi - m1[l]);
    const T a2 = m2[l] + w2 * (gi - m2[l]);
    const T a3 = m3[l] + w3 * (gi - m3[l]);
    const T vi = v[l] + wv * (gi * gi - v[l]);
    m1[l] = a1; m2[l] = a2; m3[l] = a3; v[l] = vi;
    const T a = rsq(vi + eps), b = rsq(rowr * col[l] + eps), sv = (T)sqrt(vi + eps);
    const T ad = (a1 / bc1) / ((T)sqrt(vi) / sbc2 + eps);
#define SQ(k, x) racc[k][l] += (x) * (x)
    SQ(0, gi); SQ(1, pi); SQ(2, a1); SQ(3, a2); SQ(4, a3); SQ(5, sv); SQ(6, a1 * a);
    SQ(7, a2 * a); SQ(8, a3 * a); SQ(9, a); SQ(10, b); SQ(11, gi * b); SQ(12, a1 * b);
    SQ(13, a2 * b); SQ(14, a3 * b); SQ(15, ad);
#undef SQ
  }
}

void lo_moments(int64_t R, int64_t C, const T* g, const T* p, T* m1, T* m2, T* m3, T* v,
                const T* row, const T* col, const T* sc, double* sums, int nthreads) {
  double acc[NSUM];
  for (int k = 0; k < NSUM; ++k) acc[k] = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : acc[:NSUM])
  for (int64_t r = 0; r < R; ++r) {
    const T rowr = row[r] / (sc[RM] + sc[EPSI]);
    const int64_t o = r * C;
    T racc[NSUM][L];
    memset(racc, 0, sizeof racc);
    int64_t c0 = 0;
    for (; c0 + L <= C; c0 += L)
      moments(L, g + o + c0, p + o + c0, m1 + o + c0, m2 + o + c0, m3 + o + c0, v + o + c0,
              col + c0, rowr, sc, racc);
    moments(C - c0, g + o + c0, p + o + c0, m1 + o + c0, m2 + o + c0, m3 + o + c0,
            v + o + c0, col + c0, rowr, sc, racc);
    for (int k = 0; k < NSUM; ++k)
      for (int l = 0; l < L; ++l) acc[k] += (double)racc[k][l];
  }
  for (int k = 0; k < NSUM; ++k) sums[k] = acc[k];
}

/* out[j] = relu(bias[j] + sum_k in[k] w[k][j]) for a block: JB units at a time so that
 * 2 JB independent accumulator chains hide the FMA latency */
#define JB 4
static inline void dense_relu(int nin, const T in[][L], const T* restrict w,
                              const T* restrict bias, T out[HID][L]) {
  int j = 0;
  for (; j + JB <= HID; j += JB) {
    T acc[JB][L];
    for (int q = 0; q < JB; ++q)
      for (int l = 0; l < L; ++l) acc[q][l] = bias[j + q];
    for (int k = 0; k < nin; ++k)
      for (int q = 0; q < JB; ++q) {
        const T wk = w[k * HID + j + q];
        for (int l = 0; l < L; ++l) acc[q][l] += in[k][l] * wk;
      }
    for (int q = 0; q < JB; ++q)
      for (int l = 0; l < L; ++l) out[j + q][l] = acc[q][l] > 0 ? acc[q][l] : 0;
  }
  for (; j < HID; ++j) {
    T acc[L];
    for (int l = 0; l < L; ++l) acc[l] = bias[j];
    for (int k = 0; k < nin; ++k)
      for (int l = 0; l < L; ++l) acc[l] += in[k][l] * w[k * HID + j];
    for (int l = 0; l < L; ++l) out[j][l] = acc[l] > 0 ? acc[l] : 0;
  }
}

/* one block of L coordinates (every lane valid); out may alias p */
static inline void block(const T* g, const T* p, const T* m1, const T* m2, const T* m3,
                         const T* v, const T* col, const T* ccol, T rowr, T rr, const T* sc,
                         const T* w0,
                         const T* bias, const T* wh, const T* bh, const T* wout,
                         const T* bout, T* out) {
  const T eps = sc[EPSI];
  T x[NIN][L], h[HID][L], h2[HID][L];
  for (int l = 0; l < L; ++l) {
    const T gi = g[l], a1 = m1[l], a2 = m2[l], a3 = m3[l], vi = v[l];
    const T sv = (T)sqrt(vi + eps), a = (T)1 / sv, b = rsq(rowr * col[l] + eps);
    x[0][l] = gi; x[1][l] = p[l]; x[2][l] = a1; x[3][l] = a2; x[4][l] = a3;
    x[5][l] = sv; x[6][l] = a1 * a; x[7][l] = a2 * a; x[8][l] = a3 * a;
    x[9][l] = a; x[10][l] = b; x[11][l] = gi * b; x[12][l] = a1 * b; x[13][l] = a2 * b;
    x[14][l] = a3 * b; x[15][l] = rr; x[16][l] = ccol[l];
#if NIN > NF
    x[NF][l] = (a1 / sc[BC1]) / ((T)sqrt(vi) / sc[SBC2] + eps);
#endif
  }
  dense_relu(NIN, x, w0, bias, h);
  for (int layer = 0; layer < LAYERS - 1; ++layer) {
    dense_relu(HID, h, wh + layer * HID * HID, bh + layer * HID, h2);
    memcpy(h, h2, sizeof h);
  }
  T d[L], m[L];
  for (int l = 0; l < L; ++l) { d[l] = bout[0]; m[l] = bout[1]; }
  for (int k = 0; k < HID; ++k)
    for (int l = 0; l < L; ++l) { d[l] += h[k][l] * wout[2 * k]; m[l] += h[k][l] * wout[2 * k + 1]; }
  const T expm = sc[EXPM], mult = sc[MULT];
  T step[L];
  for (int l = 0; l < L; ++l) step[l] = d[l] * vexp(m[l] * expm) * mult;
  for (int l = 0; l < L; ++l) out[l] = p[l] - step[l];
}

void lo_mlp_step(int64_t R, int64_t C, const T* g, T* p, const T* m1, const T* m2,
                 const T* m3, const T* v, const T* row, const T* col, const T* ccol,
                 const T* sc, const T* w0,
                 const T* bias, const T* wh, const T* bh, const T* wout, const T* bout,
                 int nthreads) {
  const T eps = sc[EPSI];
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const T rr = rsq(row[r] + eps), rowr = row[r] / (sc[RM] + eps);
    const int64_t o = r * C;
    int64_t c0 = 0;
    for (; c0 + L <= C; c0 += L)
      block(g + o + c0, p + o + c0, m1 + o + c0, m2 + o + c0, m3 + o + c0, v + o + c0,
            col + c0, ccol + c0, rowr, rr, sc, w0, bias, wh, bh, wout, bout, p + o + c0);
    if (c0 < C) { /* the row's tail, padded with copies of its first lane */
      const int n = (int)(C - c0);
      const T* src[8] = {g + o, p + o, m1 + o, m2 + o, m3 + o, v + o, col, ccol};
      T buf[8][L], out[L];
      for (int q = 0; q < 8; ++q)
        for (int l = 0; l < L; ++l) buf[q][l] = src[q][c0 + (l < n ? l : 0)];
      block(buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], rowr, rr, sc, w0,
            bias, wh, bh, wout, bout, out);
      for (int l = 0; l < n; ++l) p[o + c0 + l] = out[l];
    }
  }
}
