# Exact-recovery test (issue 6): real dev Ceph + `gantry up` + kill -9 of a rank. Needs the
# gantry binary, the coordinator client and a Ceph-enabled build; labelled ceph and integration.
if(TARGET gantry AND TARGET gantry_coordinator AND TARGET gantry_train AND GANTRY_HAVE_CEPH)
  gantry_add_test(recovery_test SOURCES recovery_test.cc recovery_harness.cc
                  LIBS gantry_coordinator gantry_proto gantry_train gantry_storage
                  LABELS ceph integration TIMEOUT 300)
  target_compile_definitions(recovery_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>")
  add_dependencies(recovery_test gantry)
endif()
