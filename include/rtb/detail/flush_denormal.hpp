// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Subnormal floats off for the duration of an rtb computation, the caller's mode back after it
/// (the pattern TensorFlow calls ScopedFlushDenormal). A trained net drives GELU and its derivative
/// into the subnormal range (|v| < 1.2e-38 in float), where x86 cores take a microcode assist per
/// operation: the 2-D demo ran 3× slower on a Xeon with every metric identical. So every compute
/// entry point (the trainer's step, compute_gradient, apply_gradient, sample and evaluate,
/// fit_prior, sample_end_states, a Model's or an rtb net's inference/forward/backward) opens a
/// ScopedFlushDenormal: it sets FTZ (results that would be subnormal are 0) and DAZ (subnormal
/// inputs read as 0) in MXCSR on the calling thread, the pool's workers run their tasks in the
/// caller's mode (ThreadPool), and the destructor restores the caller's control bits exactly,
/// also when the call throws. The exception flags the computation raised are kept, as
/// feupdateenv keeps them. The outermost guard of a thread decides; guards inside it do nothing,
/// so a trainer built with Config::flush_denormals = false runs its nets without flushing too.
/// User code called from inside (rewards, callbacks, data functions) runs in the caller's own mode
/// (ScopedCallerFloatMode). AArch64 has one bit for both, FPCR.FZ; elsewhere all of this compiles
/// to nothing. docs/algorithm.md ("Floating-point mode") says what it changes numerically.

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64) || defined(__SSE__)
#include <xmmintrin.h>
#define RTB_FLOAT_CONTROL_X86 1
#endif

namespace rtb {

/// The arithmetic of the denoisers' matrix products (every product goes through detail::gemm).
/// Float32: float operands and sums (the default; results as they always were). BFloat16: the
/// operands of float products rounded to bfloat16, products summed in float; weights, Adam,
/// activations, log-likelihoods and residuals stay float (or double). Double nets ignore it.
/// docs/algorithm.md ("Precision") says what it changes numerically.
enum class Precision : std::uint8_t { Float32, BFloat16 };

}  // namespace rtb

namespace rtb::detail {

/// The thread's floating-point control register and the bits rtb sets in it.
struct FloatControl {
#if defined(RTB_FLOAT_CONTROL_X86)
  using Word = std::uint32_t;
  static constexpr Word kFlush = 0x8040u;  ///< MXCSR.FTZ (bit 15) | MXCSR.DAZ (bit 6)
  static constexpr Word kFlags = 0x003Fu;  ///< the sticky exception flags (bits 0–5): outputs, not modes
  static Word get() noexcept { return _mm_getcsr(); }
  static void set(Word w) noexcept { _mm_setcsr(w); }
#elif defined(__aarch64__)
  using Word = std::uint64_t;
  static constexpr Word kFlush = Word{1} << 24;  ///< FPCR.FZ: subnormal inputs and results are 0
  static constexpr Word kFlags = 0;              ///< FPCR holds no flags (FPSR does)
  static Word get() noexcept {
    Word w;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(w));
    return w;
  }
  static void set(Word w) noexcept { __asm__ __volatile__("msr fpcr, %0" : : "r"(w) : "memory"); }
#else
  using Word = std::uint32_t;
  static constexpr Word kFlush = 0;
  static constexpr Word kFlags = 0;
  static Word get() noexcept { return 0; }
  static void set(Word) noexcept {}
#endif
  /// Whether this target has the mode at all.
  static constexpr bool supported = kFlush != 0;
  /// `mode`'s control bits with the flags of the register as it is now.
  static void restore(Word mode) noexcept { set((mode & ~kFlags) | (get() & kFlags)); }
};

/// What the entry points of a thread have decided, for the guards and user code inside them.
struct FloatModeState {
  bool decided = false;          ///< an enclosing entry point chose the mode: inner guards do nothing
  bool changed = false;          ///< it changed the register; `caller` is what it was
  FloatControl::Word caller = 0;
  Precision precision = Precision::Float32;  ///< what the outermost entry point asked for
};
inline FloatModeState& float_mode_state() noexcept {
  thread_local FloatModeState state;  // trivial: constant-initialised, no allocation, no guard
  return state;
}

/// FTZ and DAZ on this thread until the end of the scope; the caller's control bits back after.
class ScopedFlushDenormal {
 public:
  /// `flush` = false keeps the caller's mode for the scope (and for the guards inside it);
  /// `precision` is the products' arithmetic for the scope (inner guards keep the outer one's).
  explicit ScopedFlushDenormal(bool flush = true, Precision precision = Precision::Float32) noexcept {
    FloatModeState& s = float_mode_state();
    if (s.decided) return;
    outermost_ = true;
    const FloatControl::Word now = FloatControl::get();
    s = {true, false, now, precision};
    if (flush && (now & FloatControl::kFlush) != FloatControl::kFlush) {
      FloatControl::set(now | FloatControl::kFlush);
      s.changed = true;
    }
  }
  ~ScopedFlushDenormal() {
    if (!outermost_) return;
    FloatModeState& s = float_mode_state();
    if (s.changed) FloatControl::restore(s.caller);
    s = {};
  }
  ScopedFlushDenormal(const ScopedFlushDenormal&) = delete;
  ScopedFlushDenormal& operator=(const ScopedFlushDenormal&) = delete;

  /// Whether subnormals are flushed on this thread now (false where the target has no such mode).
  static bool active() noexcept {
    return FloatControl::supported && (FloatControl::get() & FloatControl::kFlush) == FloatControl::kFlush;
  }

 private:
  bool outermost_ = false;
};

/// Inside an entry point, runs user code (a reward, a callback, a data function) in the mode of
/// the entry point's caller; rtb calls made from that code decide afresh, as calls from outside.
class ScopedCallerFloatMode {
 public:
  ScopedCallerFloatMode() noexcept : outer_(float_mode_state()) {
    if (outer_.changed) {
      inside_ = FloatControl::get();
      FloatControl::restore(outer_.caller);
    }
    float_mode_state() = {};
  }
  ~ScopedCallerFloatMode() {
    if (outer_.changed) FloatControl::restore(inside_);
    float_mode_state() = outer_;
  }
  ScopedCallerFloatMode(const ScopedCallerFloatMode&) = delete;
  ScopedCallerFloatMode& operator=(const ScopedCallerFloatMode&) = delete;

 private:
  FloatModeState outer_;
  FloatControl::Word inside_ = 0;
};

/// A thread's whole mode: what a pool hands from the caller to its workers.
struct FloatMode {
  FloatControl::Word control = 0;
  FloatModeState state;
  static FloatMode current() noexcept { return {FloatControl::get(), float_mode_state()}; }
};

/// Runs the scope in `mode` (the control bits and the decisions of another thread), then puts
/// this thread's own back: a pool worker runs a caller's tasks as the caller would.
class ScopedFloatMode {
 public:
  explicit ScopedFloatMode(const FloatMode& mode) noexcept : own_(FloatMode::current()) {
    FloatControl::restore(mode.control);
    float_mode_state() = mode.state;
  }
  ~ScopedFloatMode() {
    FloatControl::restore(own_.control);
    float_mode_state() = own_.state;
  }
  ScopedFloatMode(const ScopedFloatMode&) = delete;
  ScopedFloatMode& operator=(const ScopedFloatMode&) = delete;

 private:
  FloatMode own_;
};

}  // namespace rtb::detail

namespace rtb {

/// Direct calls of a net or a Model (inference, forward, backward) inside the scope run their
/// products in `precision`, with subnormals flushed; the caller's mode comes back at the end. The
/// trainer, fit_prior and sample_end_states take their precision from their own configuration.
class ScopedPrecision {
 public:
  explicit ScopedPrecision(Precision precision) noexcept : guard_(true, precision) {}

 private:
  detail::ScopedFlushDenormal guard_;
};

}  // namespace rtb
