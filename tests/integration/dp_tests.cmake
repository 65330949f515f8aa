# Data-parallel `gantry train` (issue 6): equivalence with one rank over tcp/shm/auto/mpirun,
# ZeRO-1, bf16 reduce, exact multi-rank resume. Ranks are `gantry train` processes.
if(GANTRY_KERNELS_ONLY OR NOT TARGET gantry OR NOT TARGET gantry_train)
  return()
endif()
gantry_add_test(dp_train_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/dp_train_test.cc
                LIBS gantry_train LABELS integration TIMEOUT 300)
target_compile_definitions(dp_train_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
add_dependencies(dp_train_test gantry)
