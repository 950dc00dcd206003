// The one doctest main, built once and linked by every test executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#if defined(__SANITIZE_THREAD__)
// Debian's libtbb is not built with tsan, so its internal synchronisation is invisible to it;
// the suppressions file names what we ignore and why.
extern "C" const char *__tsan_default_options() {
  return "halt_on_error=1 second_deadlock_stack=1 suppressions=" OVERDRIVE_TSAN_SUPPRESSIONS;
}
#endif
