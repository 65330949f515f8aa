# `gantry render k8s`: manifests validated offline (tools/k8s-validate, installed by
# scripts/setup.sh; the schema tests skip without node and those npm packages) and the
# rendered pod environment run as two local `gantry train` ranks.
if(GANTRY_KERNELS_ONLY OR NOT TARGET gantry OR NOT TARGET gantry_train)
  return()
endif()
gantry_add_test(render_k8s_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/render_k8s_test.cc
                LIBS gantry_train gantry_base yaml-cpp LABELS integration TIMEOUT 300)
target_compile_definitions(render_k8s_test PRIVATE GANTRY_BINARY="$<TARGET_FILE:gantry>"
                           GANTRY_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_dependencies(render_k8s_test gantry)
