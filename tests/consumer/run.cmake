# SPDX-License-Identifier: Apache-2.0
# Builds and runs the consumer project: cmake -DMODE=find_package|subdirectory
#   -DRTB_SOURCE_DIR=… -DRTB_BINARY_DIR=… -DWORK_DIR=… -P run.cmake
file(REMOVE_RECURSE ${WORK_DIR})
# Unoptimised (no build type, so no -O): the test is about finding and linking rtb, and an -O0
# compile of the README's example takes a third of the time of an -O3 one.
set(args -S ${CMAKE_CURRENT_LIST_DIR} -B ${WORK_DIR}/build -DRTB_CONSUME=${MODE} -DCMAKE_BUILD_TYPE=)
if(MODE STREQUAL "find_package")
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${RTB_BINARY_DIR} --prefix ${WORK_DIR}/prefix
                  RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "installing rtb failed")
  endif()
  if(NOT EXISTS ${WORK_DIR}/prefix/include/rtb/rtb.hpp OR NOT EXISTS ${WORK_DIR}/prefix/lib/cmake/rtb/rtbConfig.cmake)
    message(FATAL_ERROR "the install tree lacks the headers or the package config")
  endif()
  list(APPEND args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  list(APPEND args -DRTB_SOURCE_DIR=${RTB_SOURCE_DIR})
endif()
foreach(step IN ITEMS configure build run)
  if(step STREQUAL "configure")
    set(cmd ${CMAKE_COMMAND} ${args})
  elseif(step STREQUAL "build")
    set(cmd ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
  else()
    set(cmd ${WORK_DIR}/build/consumer)
  endif()
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}")
  if(rc)
    message(FATAL_ERROR "consumer ${step} (${MODE}) failed:\n${err}")
  endif()
endforeach()
