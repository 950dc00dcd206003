// Test cases that cannot run here are reported as skipped, never as passed.
//
// A test case that finds it cannot run (say, the CPU lacks an instruction set) calls
// skip_test_case() before any check and returns. That prints "SKIPPED: <test case>: <why>". When
// every test case the run selected was skipped and nothing failed, the process exits with
// skip_exit_code, which overdrive_add_test registers as ctest's SKIP_RETURN_CODE: ctest runs one
// test case per process, so its summary lists the case as "Not Run (Skipped)". A direct run of a
// whole test binary prints the SKIPPED lines and goes on with the other test cases. A skip never
// hides a failure: a run with a failed check exits as failed.
//
// Include from exactly one translation unit per test executable (it registers a doctest listener).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <set>
#include <string>

namespace overdrive::test {

/// The exit code of a run whose selected test cases were all skipped (automake's convention).
inline constexpr int skip_exit_code = 77;

namespace detail {
inline std::set<std::string> &skipped_cases() {
  static std::set<std::string> names;
  return names;
}
} // namespace detail

/// Marks the running test case as skipped and prints why. Call it before any check, then return.
inline void skip_test_case(const std::string &why) {
  const auto *tc = doctest::getContextOptions()->currentTest;
  const std::string name = tc ? tc->m_name : "(no test case)";
  std::printf("SKIPPED: %s: %s\n", name.c_str(), why.c_str());
  std::fflush(stdout);
  detail::skipped_cases().insert(name);
}

/// Turns "every selected test case was skipped" into skip_exit_code, after doctest's own summary.
struct SkipListener : doctest::IReporter {
  explicit SkipListener(const doctest::ContextOptions &) {}
  void report_query(const doctest::QueryData &) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats &s) override {
    const auto skipped = detail::skipped_cases().size();
    if (s.numTestCasesPassingFilters == 0 || skipped != s.numTestCasesPassingFilters ||
        s.numTestCasesFailed != 0 || s.numAssertsFailed != 0)
      return;
    // main returns after the reporters have printed; only then replace its exit code.
    std::atexit([] {
      std::fflush(nullptr);
      std::_Exit(skip_exit_code);
    });
  }
  void test_case_start(const doctest::TestCaseData &) override {}
  void test_case_reenter(const doctest::TestCaseData &) override {}
  void test_case_end(const doctest::CurrentTestCaseStats &) override {}
  void test_case_exception(const doctest::TestCaseException &) override {}
  void subcase_start(const doctest::SubcaseSignature &) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData &) override {}
  void log_message(const doctest::MessageData &) override {}
  void test_case_skipped(const doctest::TestCaseData &) override {}
};

REGISTER_LISTENER("overdrive_skip", 0, SkipListener);

} // namespace overdrive::test
