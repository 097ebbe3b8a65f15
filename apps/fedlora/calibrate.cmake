# `fedlora calibrate` (included by apps/CMakeLists.txt after the fedlora target): the virtual-radio and USRP
# calibration procedures and `check`, writing and reading calibration files through fedlora_calib (lib/calib).
target_sources(fedlora PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cmd_calibrate.cpp ${CMAKE_CURRENT_LIST_DIR}/calibrate_usrp.cpp)
target_link_libraries(fedlora PRIVATE fedlora_calib)
