# comm integration tests: real rank processes on loopback (conformance, kill -9, netns, mpirun).
if(GANTRY_KERNELS_ONLY)
  return()  # GPU-check builds have no comm integration tests
endif()
add_executable(comm_test_worker comm_test_worker.cc)
target_link_libraries(comm_test_worker PRIVATE gantry_comm)
set(comm_worker_def GANTRY_COMM_TEST_WORKER="$<TARGET_FILE:comm_test_worker>")

gantry_add_test(comm_conformance_test SOURCES comm_conformance_test.cc
                LIBS gantry_comm LABELS integration TIMEOUT 200)
target_compile_definitions(comm_conformance_test PRIVATE ${comm_worker_def})
add_dependencies(comm_conformance_test comm_test_worker)

gantry_add_test(comm_failure_test SOURCES comm_failure_test.cc
                LIBS gantry_comm LABELS integration TIMEOUT 200)
target_compile_definitions(comm_failure_test PRIVATE ${comm_worker_def})
add_dependencies(comm_failure_test comm_test_worker)

foreach(t comm_netns_test comm_mpirun_test)
  gantry_add_test(${t} SOURCES ${t}.cc LIBS gantry_comm LABELS integration TIMEOUT 200)
  target_compile_definitions(${t} PRIVATE ${comm_worker_def})
  add_dependencies(${t} comm_test_worker)
endforeach()

# hierarchical backend (owned with comm/hierarchical): uneven fake hosts, kill -9 naming.
gantry_add_test(comm_hier_test SOURCES comm_hier_test.cc LIBS gantry_comm LABELS integration
                TIMEOUT 300)
target_compile_definitions(comm_hier_test PRIVATE ${comm_worker_def})
add_dependencies(comm_hier_test comm_test_worker)

# env bootstrap with real processes: WORLD_SIZE mismatch, duplicate RANK, a foreign listener
# on MASTER_PORT, torchrun's agent store, IPv6 MASTER_ADDR.
gantry_add_test(comm_bootstrap_test SOURCES comm_bootstrap_test.cc LIBS gantry_comm
                LABELS integration TIMEOUT 300)
target_compile_definitions(comm_bootstrap_test PRIVATE ${comm_worker_def})
add_dependencies(comm_bootstrap_test comm_test_worker)

# `gantry train` under a real torchrun (skipped without torch in /usr/bin/python3).
if(TARGET gantry)
  gantry_add_test(comm_torchrun_test SOURCES comm_torchrun_test.cc LIBS gantry_comm
                  LABELS integration TIMEOUT 200)
  target_compile_definitions(comm_torchrun_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
  add_dependencies(comm_torchrun_test gantry)
endif()
