// MPI initialisation on demand: only a process that a launcher started (or OVERDRIVE_MPI=1) calls
// MPI_Init_thread, so plain `overdrive render` and the tests that run it never load the runtime.
#include "cli/mpi_session.hpp"

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mpi.h>

namespace overdrive::cli {
namespace {

bool env_set(const char *name) {
  const char *v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

bool launched_by_mpi() {
  if (const char *v = std::getenv("OVERDRIVE_MPI")) return std::strcmp(v, "1") == 0;
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMIX_RANK") || env_set("PMI_RANK");
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized == 0) MPI_Finalize();
}

MpiWorld init_world() {
  MpiWorld w;
  if (!launched_by_mpi()) return w;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized == 0) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      std::cerr << "overdrive: error: MPI_Init_thread failed\n";
      std::exit(1);
    }
    if (provided < MPI_THREAD_FUNNELED) {
      std::cerr << "overdrive: error: the MPI library does not provide MPI_THREAD_FUNNELED\n";
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    std::atexit(finalize_at_exit);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  w.active = true;
  return w;
}

} // namespace

const MpiWorld &mpi_world() {
  static const MpiWorld world = init_world(); // C++11 magic static: the first call is thread-safe
  return world;
}

} // namespace overdrive::cli
