# Coordinator/worker integration tests: real `gantry` processes on loopback (and a netns).
if(TARGET gantry AND TARGET gantry_coordinator)
  gantry_add_test(coord_cluster_test
    SOURCES coord_cluster_test.cc
    LIBS gantry_coordinator gantry_proto
    LABELS integration
    TIMEOUT 120)
  target_compile_definitions(coord_cluster_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
  add_dependencies(coord_cluster_test gantry)
endif()
if(TARGET gantry AND TARGET gantry_coordinator)
  gantry_add_test(coord_extra_test
    SOURCES coord_extra_test.cc
    LIBS gantry_coordinator gantry_proto PkgConfig::ZMQ
    LABELS integration
    TIMEOUT 150)
  target_compile_definitions(coord_extra_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
  add_dependencies(coord_extra_test gantry)
endif()
if(TARGET gantry AND TARGET gantry_coordinator)
  gantry_add_test(coord_netns_test
    SOURCES coord_netns_test.cc
    LIBS gantry_coordinator gantry_proto
    LABELS integration
    TIMEOUT 60)
  target_compile_definitions(coord_netns_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
  add_dependencies(coord_netns_test gantry)
endif()
