// Kernel tests for an instruction set the CPU lacks are skipped (see skip.hpp), not passed.
// Include from exactly one translation unit per test executable.
#pragma once

#include "common/skip.hpp"
#include "render/render.hpp"

#include <string>

namespace overdrive::test {

/// True when this CPU runs kernels for isa. Otherwise marks the test case skipped; the caller
/// returns at once. OVERDRIVE_ISA does not enter into it: it caps only what Isa::Auto resolves
/// to, and a kernel asked for by name still runs (and is tested) on a CPU that has it.
inline bool require_isa(Isa isa) {
  if (isa_supported(isa)) return true;
  skip_test_case("CPU lacks " + std::string(to_string(isa)));
  return false;
}

} // namespace overdrive::test
