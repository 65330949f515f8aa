# gantry_add_test(NAME SOURCES a.cc b.cc LIBS gantry_x LABELS unit [ceph ...] [TIMEOUT s]): a
# GoogleTest executable whose cases are discovered as ctest tests with the given label(s) and
# timeout. Used by tests/CMakeLists.txt and by the GANTRY_KERNELS_ONLY build in the root
# CMakeLists.
include(GoogleTest)

function(gantry_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/generated)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  # gtest_discover_tests flattens a list passed in PROPERTIES (LABELS a;b would make "b" a
  # property name), so the labels are set by a ctest script included after the discovered
  # tests, over the list of test names discovery produced.
  gtest_discover_tests(${name} TEST_LIST ${name}_TESTS PROPERTIES TIMEOUT ${T_TIMEOUT}
                       DISCOVERY_TIMEOUT 60)
  set(script ${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake)
  file(WRITE ${script}
       "if(${name}_TESTS)\n  set_tests_properties(\${${name}_TESTS} PROPERTIES LABELS \"${T_LABELS}\")\nendif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${script})
endfunction()
