// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A small fork-join pool, the host executor. `parallel_for(n, f)` runs f(task, worker) for
/// task = 0..n−1 on the workers and the calling thread and returns when all are done; `worker` is
/// the index (< size()) of the thread running the task, so tasks can use per-thread scratch.
/// Tasks are claimed in increasing order. An exception thrown by a task is captured, the tasks
/// not yet started are skipped, every running task is waited for, and the first exception is
/// rethrown on the caller's thread: no worker outlives the call. No allocation per call. The
/// workers run a call's tasks in the caller's floating-point mode (rounding, FTZ/DAZ: what
/// detail/flush_denormal.hpp sets) and go back to their own after, so a result does not depend on
/// which thread computed it.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "rtb/base.hpp"
#include "rtb/detail/flush_denormal.hpp"
#include "rtb/error.hpp"

namespace rtb::detail {

class ThreadPool {
 public:
  /// The most threads a pool may have: far beyond any machine rtb targets, small enough that a
  /// typo (threads = 100000) is an error rather than an attempt to start them.
  static constexpr Index kMaxThreads = 1024;

  /// `threads` in total, the caller included; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(Index threads = 0) {
    if (threads < 0 || threads > kMaxThreads)
      throw InvalidArgumentError(detail::message("threads must be in [0, ", kMaxThreads, "] (0 = all cores), got ",
                                                 threads));
    const Index n = threads > 0 ? threads : static_cast<Index>(std::max(1u, std::thread::hardware_concurrency()));
    try {
      for (Index i = 1; i < n; ++i) workers_.emplace_back([this, i] { work(i); });
    } catch (const std::system_error& e) {
      stop_workers();
      throw Error(detail::message("could not start ", n, " threads (", e.what(), ", after ", workers_.size() + 1,
                                  "); ask for fewer threads"));
    }
  }
  ~ThreadPool() { stop_workers(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  Index size() const { return static_cast<Index>(workers_.size()) + 1; }

  template <class F>
  void parallel_for(Index n, F&& f) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
      for (Index i = 0; i < n; ++i) f(i, Index{0});
      return;
    }
    auto call = [](void* fn, Index task, Index worker) { (*static_cast<std::remove_reference_t<F>*>(fn))(task, worker); };
    {
      std::lock_guard lock(mutex_);
      fn_ = const_cast<void*>(static_cast<const void*>(&f));
      call_ = call;
      mode_ = FloatMode::current();
      count_ = n;
      next_.store(0);
      failed_.store(false);
      error_ = nullptr;
      pending_ = static_cast<Index>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run_tasks(0);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void run_tasks(Index worker) {
    for (Index i = next_.fetch_add(1); i < count_; i = next_.fetch_add(1)) {
      if (failed_.load(std::memory_order_relaxed)) continue;  // skip what has not started
      try {
        call_(fn_, i, worker);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true);
      }
    }
  }
  void work(Index worker) {
    std::size_t seen = 0;
    for (;;) {
      FloatMode mode;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        mode = mode_;
      }
      {
        ScopedFloatMode in_callers_mode(mode);
        run_tasks(worker);
      }
      {
        std::lock_guard lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }
  void stop_workers() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<Index> next_{0};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
  Index count_ = 0;
  Index pending_ = 0;
  std::size_t generation_ = 0;
  bool stop_ = false;
  void* fn_ = nullptr;
  void (*call_)(void*, Index, Index) = nullptr;
  FloatMode mode_;  // the caller's, for this call's tasks
};

/// Lets parallel tasks add their results into one accumulator in task order (task 0 first), so
/// a sum over tasks does not depend on the number of threads, while each thread needs only its
/// own buffer: a task computes, waits for its turn, adds, and passes the turn on. With tasks
/// claimed in increasing order and one buffer per thread, the turn always comes (the lowest
/// unfinished task is running). If a task fails, `abort()` releases every waiter.
class OrderedTurns {
 public:
  void reset() {
    next_.store(0);
    aborted_.store(false);
  }
  /// Blocks until it is `task`'s turn; false if the region was aborted (skip the addition).
  bool wait(Index task) {
    for (;;) {
      const Index now = next_.load(std::memory_order_acquire);
      if (now == task) return true;
      if (aborted_.load(std::memory_order_acquire)) return false;
      next_.wait(now, std::memory_order_acquire);
    }
  }
  void pass(Index task) {
    next_.store(task + 1, std::memory_order_release);
    next_.notify_all();
  }
  void abort() {
    aborted_.store(true, std::memory_order_release);
    next_.store(-1, std::memory_order_release);  // a value no waiter waits for: each wakes and sees the abort
    next_.notify_all();
  }

 private:
  std::atomic<Index> next_{0};
  std::atomic<bool> aborted_{false};
};

}  // namespace rtb::detail
