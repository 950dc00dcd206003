# Included by ctest after test_cluster's discovered tests (tests/CMakeLists.txt appends it to the
# directory's TEST_INCLUDE_FILES): the cluster tests start several servers and a balancer each
# and check arrival times with generous bounds, so they run alone, never beside another test.
if(test_cluster_TESTS)
  set_tests_properties(${test_cluster_TESTS} PROPERTIES RUN_SERIAL TRUE TIMEOUT 300)
endif()
# The pyramid tests start mpirun, servers and nginx and render hundreds of tiles: alone too.
if(test_pyramid_TESTS)
  set_tests_properties(${test_pyramid_TESTS} PROPERTIES RUN_SERIAL TRUE TIMEOUT 400)
endif()
