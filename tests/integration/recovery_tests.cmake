# Exact-recovery test (issue 6): real dev Ceph + `gantry up` + kill -9 of a rank. Needs the
# gantry binary, the coordinator client and a Ceph-enabled build. Registered with add_test (one
# gtest case) rather than gantry_add_test: gtest_discover_tests flattens the label list, and
# this test must carry both labels, ceph and integration.
if(TARGET gantry AND TARGET gantry_coordinator AND TARGET gantry_train AND GANTRY_HAVE_CEPH)
  add_executable(recovery_test recovery_test.cc recovery_harness.cc)
  target_link_libraries(recovery_test PRIVATE gantry_coordinator gantry_proto gantry_train
                        gantry_storage GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(recovery_test PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/generated)
  target_compile_definitions(recovery_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
  add_dependencies(recovery_test gantry)
  add_test(NAME Recovery.KilledRankResumesToByteIdenticalParameters COMMAND recovery_test)
  set_tests_properties(Recovery.KilledRankResumesToByteIdenticalParameters PROPERTIES
    LABELS "ceph;integration" TIMEOUT 300 SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
endif()
