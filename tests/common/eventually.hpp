// The one bounded poll of the test suites, for states that no event signals (a stats() counter,
// a process that has exited, a port that accepts).
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace overdrive::test {

/// Upper bound for any wait in a test; far above anything a healthy run needs.
inline constexpr std::chrono::seconds kWaitLimit{20};

/// Polls pred (sleeping 100 us between tries) until it holds or the limit passes; returns its
/// last value.
template <typename Pred> bool eventually(Pred pred, std::chrono::milliseconds limit = kWaitLimit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

} // namespace overdrive::test
