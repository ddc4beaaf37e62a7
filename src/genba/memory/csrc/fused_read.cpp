// One-pass prototype read of a half-precision per-class memory (see genba/memory/read.py).
// For one unit query q and class c with rows r_cs (fp16), mask m_cs and Gram G_c (fp16):
//   s_cs = q . r_cs,  w_cs = m_cs exp(beta (s_cs - 1)),
//   logit_c = scale * (sum_s w_cs s_cs) / sqrt(w_c^T G_c w_c).
// Rows and Gram are each read once (F16C conversion + FMA), classes in parallel (OpenMP).
#include <torch/extension.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>

torch::Tensor fused_read(torch::Tensor rows, torch::Tensor gram, torch::Tensor valid, torch::Tensor q,
                         double beta, double scale) {
  TORCH_CHECK(rows.scalar_type() == at::kHalf && gram.scalar_type() == at::kHalf, "fp16 rows and gram");
  TORCH_CHECK(rows.is_contiguous() && gram.is_contiguous() && valid.is_contiguous() && q.is_contiguous(), "contiguous");
  const int64_t C = rows.size(0), S = rows.size(1), D = rows.size(2);
  TORCH_CHECK(S <= 512 && D % 8 == 0 && q.numel() == D, "S <= 512 and D % 8 == 0");
  auto out = torch::empty({C}, torch::kFloat32);
  const uint16_t* R = reinterpret_cast<const uint16_t*>(rows.data_ptr<at::Half>());
  const at::Half* G = gram.data_ptr<at::Half>();
  const bool* V = valid.data_ptr<bool>();
  const float* Q = q.data_ptr<float>();
  float* O = out.data_ptr<float>();
  const float b = static_cast<float>(beta);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    float w[512];
    float num = 0.f;
    for (int64_t s = 0; s < S; ++s) {
      if (!V[c * S + s]) { w[s] = 0.f; continue; }
      const uint16_t* r = R + (c * S + s) * D;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t d = 0; d < D; d += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + d)));
        acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(Q + d), acc);
      }
      __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
      lo = _mm_hadd_ps(lo, lo);
      lo = _mm_hadd_ps(lo, lo);
      const float sim = _mm_cvtss_f32(lo);
      w[s] = std::exp(b * (sim - 1.f));
      num += w[s] * sim;
    }
    float den = 0.f;
    for (int64_t s = 0; s < S; ++s) {
      if (w[s] == 0.f) continue;
      const at::Half* g = G + (c * S + s) * S;
      float acc = 0.f;
      for (int64_t t = 0; t < S; ++t) acc += static_cast<float>(g[t]) * w[t];
      den += w[s] * acc;
    }
    O[c] = static_cast<float>(scale) * num / std::max(std::sqrt(std::max(den, 0.f)), 1e-12f);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fused_read", &fused_read, "one-pass fp16 memory read"); }
