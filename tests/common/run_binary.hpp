// Runs the overdrive executable built beside the tests, bounded by timeout(1), and captures its
// stdout and stderr together.
#pragma once

#include <cstdio>
#include <doctest/doctest.h>
#include <string>
#include <sys/wait.h>

namespace overdrive::test {

struct Run {
  int status = -1;    ///< exit status, -1 if killed by a signal
  std::string output; ///< stdout and stderr together
  /// A sanitizer report in the output (ASan, TSan, LSan, UBSan): a test expecting a failing exit
  /// status must not count one as the failure it wanted.
  bool sanitizer_report() const {
    return output.find("Sanitizer") != std::string::npos ||
           output.find("runtime error:") != std::string::npos;
  }
};

inline std::string shell_quote(const std::string &s) {
  std::string q = "'";
  for (char c : s)
    q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// A shell command, bounded by timeout(1); stdout and stderr together.
inline Run run_shell(const std::string &cmd, int seconds) {
  const std::string bounded = "timeout " + std::to_string(seconds) + " " + cmd + " 2>&1";
  Run r;
  FILE *p = popen(bounded.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

/// `overdrive ARGS` (ARGS is shell text); the CLI itself must never hang, so 60 s bound it.
inline Run run_overdrive(const std::string &args) {
  return run_shell(shell_quote(OVERDRIVE_BIN_PATH) + " " + args, 60);
}

} // namespace overdrive::test
