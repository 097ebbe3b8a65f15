# `fedlora report` (included by apps/CMakeLists.txt after the fedlora target): its source, and its plotting script
# embedded in the binary as a string constant, like bench_train_step.py.
target_sources(fedlora PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cmd_report.cpp)
set(_report_py ${CMAKE_CURRENT_LIST_DIR}/report_plots.py)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_report_py})
file(READ ${_report_py} FEDLORA_REPORT_PLOTS_PY)
file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/generated/report_plots_py.h
     CONTENT "// Generated from apps/fedlora/report_plots.py; do not edit.\n#pragma once\ninline constexpr const char* kReportPlotsPy = R\"PYSRC(@FEDLORA_REPORT_PLOTS_PY@)PYSRC\";\n"
     @ONLY)
