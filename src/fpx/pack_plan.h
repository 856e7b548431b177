// The bit-level plan of the prepacked FPx layout (docs/format.md has the diagrams).
//
// A GPU thread turns packed bits into the 16-bit operands of a Tensor-Core MMA. For every
// format we place the code's bits so that each half2 register comes out of ONE funnel
// rotation plus ONE mask per segment, already in its final bit positions:
//
//   * "raw placement": the code's exponent+mantissa field goes to the low end of the
//     FP16 (or BF16) exponent, its sign to bit 15. The resulting half equals
//     value * 2^(bias - 15) (FP16) or value * 2^(bias - 127) (BF16) for normals AND
//     subnormals (a zero FPx exponent lands in the zero half exponent), so dequantization
//     is pure bit logic; the power of two is folded into the per-channel scale.
//   * the b code bits are split into segments of 4, 2 and 1 bits ("4+2" for FP6, "4+1" for
//     FP5, the general "1+2+4"); each segment is stored in its own 32-bit words.
//   * a segment's bits for one value have fixed target positions T in a half. A 32-bit
//     word holds 32/w values of a w-bit segment as (32/w)/2 half2 "slots"; slot h keeps
//     its low half's bits at (T + c_h) mod 32 and its high half's at (T + 16 + c_h) mod 32,
//     where the translates c_h tile Z16 (T + c_h partition 0..15). Then
//       half2(slot h) = rotl(word, -c_h) & (T | T << 16)
//     and the halves of all segments are OR-ed together.
//
// make_pack_plan() searches, at compile time where it can, for the split of code bits into
// segments with the fewest segments whose target sets tile Z16 (E2M1's 4-bit set
// {9,10,11,15} does not, so FP4 becomes 2+2). The CPU packer, the unpacker, the CPU linear
// and the CUDA kernels all read the same plan.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "fpx/format.h"

namespace fp6serve::fpx {

// A packing unit is one m16 x k128 tile of the weight: 8 MMA A fragments (m16n8k16) in a
// row. Rows are padded to a multiple of 16, columns to a multiple of 128.
inline constexpr int kUnitRows = 16;
inline constexpr int kUnitCols = 128;
inline constexpr int kUnitFragments = 8;
inline constexpr int kWarpLanes = 32;

// Which element of the unit lane `lane` holds in half `half` (0 low, 1 high) of register
// `reg` (0..3) of fragment `fragment` (0..7): the m16n8k16 row-major A fragment layout,
// with g = lane / 4 and t = lane % 4 giving rows g, g+8 and columns 2t, 2t+1, 2t+8, 2t+9.
constexpr int unit_row(int lane, int reg) {
  return lane / 4 + 8 * (reg & 1);
}
constexpr int unit_col(int lane, int reg, int half, int fragment) {
  return 16 * fragment + 2 * (lane % 4) + half + 8 * (reg >> 1);
}

struct Segment {
  int width = 0;            // bits per value: 4, 2 or 1
  int code_bits[4] = {};    // code_bits[k]: which bit of the code is the segment's k-th bit
  int targets[4] = {};      // targets[k]: where that bit goes in the 16-bit half
  int translates[16] = {};  // c_h for each slot h of a word (16 / width slots)

  constexpr int slots() const { return 16 / width; }
  constexpr int words_per_lane() const { return 2 * width; }  // per unit
  constexpr int fragments_per_word() const { return 4 / width; }
  // Left-rotation that moves slot h's bits onto the targets.
  constexpr int rotation(int slot) const { return (32 - translates[slot]) & 31; }
  constexpr uint32_t half2_mask() const {
    uint32_t m = 0;
    for (int k = 0; k < width; ++k) m |= (1u << targets[k]) | (1u << (targets[k] + 16));
    return m;
  }
  // Bytes each lane reads per coalesced access: 16 (uint4), or 8 (uint2) for 1-bit segments.
  constexpr int chunk_bytes() const { return width >= 2 ? 16 : 8; }
};

struct PackPlan {
  Format format;
  DType target = DType::kF16;  // the 16-bit type the tensor cores consume: F16 or BF16
  int num_segments = 0;
  Segment segments[8] = {};

  constexpr int unit_bytes() const { return kUnitRows * kUnitCols * format.bits() / 8; }
  // Bytes of a [rows, cols] matrix packed with this plan (padded to whole 16x128 units).
  constexpr size_t packed_bytes(int64_t rows, int64_t cols) const {
    return static_cast<size_t>((rows + kUnitRows - 1) / kUnitRows * ((cols + kUnitCols - 1) / kUnitCols) *
                               unit_bytes());
  }
  constexpr int region_offset(int s) const {
    int off = 0;
    for (int i = 0; i < s; ++i) off += kWarpLanes * 4 * segments[i].words_per_lane();
    return off;
  }
  // Byte offset, inside a unit, of word `word` of lane `lane` in segment `s`. A segment's
  // region is [chunk][lane][word in chunk]: each warp-wide access reads 512 (or 256)
  // contiguous bytes.
  constexpr int word_offset(int s, int lane, int word) const {
    const int chunk = segments[s].chunk_bytes();
    const int per_chunk = chunk / 4;
    return region_offset(s) + (word / per_chunk) * kWarpLanes * chunk + lane * chunk + (word % per_chunk) * 4;
  }
  // log2 of (raw 16-bit value / FPx value): bias-15 for F16, bias-127 for BF16.
  constexpr int raw_exponent_offset() const { return format.bias() - (target == DType::kF16 ? 15 : 127); }
};

// Raw placement needs the FPx exponent range inside the half's finite exponents and the
// mantissa inside its mantissa: F16 holds E <= 4 (E5M2's top binade would be Inf there),
// M <= 10; BF16 holds E <= 7, M <= 7, i.e. every format of at most 8 bits.
constexpr bool target_supported(Format f, DType target) {
  if (!f.valid()) return false;
  if (target == DType::kF16) return f.exp_bits <= 4 && f.man_bits <= 10;
  if (target == DType::kBF16) return f.exp_bits <= 7 && f.man_bits <= 7;
  return false;
}

namespace detail {

// Finds translates c with (T + c) mod 16 partitioning Z16; returns false if none exist.
constexpr bool tile_z16(const int* targets, int width, int* translates) {
  int count = 16 / width;
  int chosen[16] = {};
  int choice_index[16] = {};  // which element of T covers the first free residue
  uint32_t covered = 0;
  int depth = 0;
  // Iterative backtracking: at each depth cover the smallest uncovered residue u by one of
  // the `width` elements of T, i.e. with translate (u - T[k]) mod 16.
  choice_index[0] = 0;
  while (depth >= 0) {
    if (depth == count) {
      // A tiling shifted by a constant is a tiling: make slot 0's translate 0, so slot 0
      // needs no rotation on the GPU.
      for (int i = 0; i < count; ++i) translates[i] = (chosen[i] - chosen[0] + 16) % 16;
      return true;
    }
    int u = 0;
    while (covered & (1u << u)) ++u;
    bool advanced = false;
    while (choice_index[depth] < width) {
      const int c = ((u - targets[choice_index[depth]]) % 16 + 16) % 16;
      ++choice_index[depth];
      uint32_t set = 0;
      bool ok = true;
      for (int k = 0; k < width; ++k) {
        const uint32_t bit = 1u << ((targets[k] + c) % 16);
        if ((covered | set) & bit) ok = false;
        set |= bit;
      }
      if (!ok) continue;
      chosen[depth] = c;
      covered |= set;
      ++depth;
      if (depth < 16) choice_index[depth] = 0;
      advanced = true;
      break;
    }
    if (advanced) continue;
    // Exhausted this depth: undo the previous choice.
    --depth;
    if (depth >= 0) {
      for (int k = 0; k < width; ++k) covered &= ~(1u << ((targets[k] + chosen[depth]) % 16));
    }
  }
  return false;
}

constexpr int target_position(Format f, DType target, int code_bit) {
  if (code_bit == f.bits() - 1) return 15;  // sign
  const int base = (target == DType::kF16 ? 10 : 7) - f.man_bits;
  return base + code_bit;
}

// Tries to assign the unassigned code bits (mask `free_bits`) to segments widths[s..n).
constexpr bool assign(Format f, DType target, const int* widths, int n, int s, uint32_t free_bits, PackPlan& plan) {
  if (s == n) return free_bits == 0;
  const int w = widths[s];
  const int b = f.bits();
  // Enumerate w-subsets of the free bits in lexicographic order (lowest bits first).
  int idx[4] = {};
  for (int k = 0; k < w; ++k) idx[k] = k;
  for (;;) {
    bool valid = true;
    for (int k = 0; k < w; ++k)
      if (idx[k] >= b || !(free_bits & (1u << idx[k]))) valid = false;
    if (valid) {
      Segment seg;
      seg.width = w;
      for (int k = 0; k < w; ++k) {
        seg.code_bits[k] = idx[k];
        seg.targets[k] = target_position(f, target, idx[k]);
      }
      if (tile_z16(seg.targets, w, seg.translates)) {
        plan.segments[s] = seg;
        uint32_t rest = free_bits;
        for (int k = 0; k < w; ++k) rest &= ~(1u << idx[k]);
        if (assign(f, target, widths, n, s + 1, rest, plan)) return true;
      }
    }
    // Next combination of w indices out of b.
    int k = w - 1;
    while (k >= 0 && idx[k] == b - w + k) --k;
    if (k < 0) return false;
    ++idx[k];
    for (int j = k + 1; j < w; ++j) idx[j] = idx[j - 1] + 1;
  }
}

}  // namespace detail

// The plan for a format and target, or a plan with num_segments == 0 when the target cannot
// hold the format. Width multisets are tried by increasing segment count, larger widths
// first, so FP6 is "4+2", FP5 "4+1", FP7 "4+2+1".
constexpr PackPlan make_pack_plan(Format f, DType target) {
  PackPlan plan;
  plan.format = f;
  plan.target = target;
  if (!target_supported(f, target)) return plan;
  const int b = f.bits();
  for (int count = 1; count <= b; ++count) {
    // All non-increasing sequences of `count` widths from {4, 2, 1} summing to b.
    for (int a4 = count; a4 >= 0; --a4) {
      for (int a2 = count - a4; a2 >= 0; --a2) {
        const int a1 = count - a4 - a2;
        if (4 * a4 + 2 * a2 + a1 != b) continue;
        int widths[8] = {};
        int n = 0;
        for (int i = 0; i < a4; ++i) widths[n++] = 4;
        for (int i = 0; i < a2; ++i) widths[n++] = 2;
        for (int i = 0; i < a1; ++i) widths[n++] = 1;
        if (detail::assign(f, target, widths, n, 0, (1u << b) - 1, plan)) {
          plan.num_segments = n;
          return plan;
        }
      }
    }
  }
  return plan;
}

// Runtime form: throws kUnsupported with the reason when the format cannot be planned.
PackPlan pack_plan(Format format, DType target);

// The target a CPU consumer uses: F16 when it holds the format, else BF16.
DType default_target(Format format);

}  // namespace fp6serve::fpx
