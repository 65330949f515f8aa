# gantry_add_test(NAME SOURCES a.cc b.cc LIBS gantry_x LABELS unit [TIMEOUT s]): a GoogleTest
# executable whose cases are discovered as ctest tests with the given label(s) and timeout.
# Used by tests/CMakeLists.txt and by the GANTRY_KERNELS_ONLY build in the root CMakeLists.
include(GoogleTest)

function(gantry_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/generated)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  gtest_discover_tests(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       DISCOVERY_TIMEOUT 60)
endfunction()
