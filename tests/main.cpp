// The one doctest main, built once and linked by every test executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#if defined(__SANITIZE_THREAD__)
// Stop at the first report so it is the one printed (suppressions: executors/tsan.supp).
extern "C" const char *__tsan_default_options() {
  return "halt_on_error=1 second_deadlock_stack=1";
}
#endif
