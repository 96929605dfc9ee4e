// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A small fork-join pool. `parallel_for(n, f)` runs f(0..n−1) on the workers and the calling
/// thread and returns when all are done. Tasks write disjoint buffers and the caller reduces
/// them in task order, so results do not depend on the thread count. No allocation per call.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "rtb/config.hpp"

namespace rtb::detail {

class ThreadPool {
 public:
  /// `threads` in total, the caller included; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(Index threads = 0) {
    Index n = threads > 0 ? threads : static_cast<Index>(std::max(1u, std::thread::hardware_concurrency()));
    for (Index i = 1; i < n; ++i) workers_.emplace_back([this] { work(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  Index size() const { return static_cast<Index>(workers_.size()) + 1; }

  template <class F>
  void parallel_for(Index n, F&& f) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
      for (Index i = 0; i < n; ++i) f(i);
      return;
    }
    auto call = [](void* fn, Index i) { (*static_cast<std::remove_reference_t<F>*>(fn))(i); };
    {
      std::lock_guard lock(mutex_);
      fn_ = const_cast<void*>(static_cast<const void*>(&f));
      call_ = call;
      count_ = n;
      next_.store(0);
      pending_ = static_cast<Index>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run_tasks();
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  void run_tasks() {
    for (Index i = next_.fetch_add(1); i < count_; i = next_.fetch_add(1)) call_(fn_, i);
  }
  void work() {
    std::size_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      run_tasks();
      {
        std::lock_guard lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<Index> next_{0};
  Index count_ = 0;
  Index pending_ = 0;
  std::size_t generation_ = 0;
  bool stop_ = false;
  void* fn_ = nullptr;
  void (*call_)(void*, Index) = nullptr;
};

}  // namespace rtb::detail
