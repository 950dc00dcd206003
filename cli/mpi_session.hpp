// The MPI world of this process: `mpirun -n R overdrive pyramid|render ...` splits work across R
// ranks; the same binary started without mpirun is rank 0 of 1 and never touches MPI.
#pragma once

namespace overdrive::cli {

/// This process's place in the MPI world; rank 0 of 1 when not started by mpirun.
struct MpiWorld {
  int rank = 0;
  int size = 1;
  bool active = false; ///< MPI_Init_thread was called (and MPI_Finalize will be, at exit)
};

/// Initialises MPI on the first call (MPI_Init_thread with MPI_THREAD_FUNNELED: only the thread
/// that made this first call may make MPI calls) when the process was started by an MPI launcher
/// (mpirun/mpiexec/srun: the environment has OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK), or
/// when OVERDRIVE_MPI=1 asks for an MPI singleton; otherwise returns rank 0 of 1 with `active`
/// false and MPI is never initialised (a plain run needs no MPI runtime and pays nothing for it).
/// MPI_Finalize runs at exit (std::atexit) unless MPI is already finalised. The first call is
/// thread-safe; every later call returns the same object.
const MpiWorld &mpi_world();

} // namespace overdrive::cli
